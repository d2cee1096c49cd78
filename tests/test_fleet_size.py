"""PUT /fleet/{host}/size only for hosts the fleet knows, and DELETE to forget a size."""

from __future__ import annotations

from collections.abc import Callable

from fastapi.testclient import TestClient

from app.dispatch import fleet
from app.services.context import Context


def manager_beats(ctx: Context, host: str) -> None:
    """The heartbeat a live WorkerManager on `host` writes."""
    manager_id = f"{host}:manager:4242"
    state = {"kind": "manager", "worker_id": manager_id, "host": host, "desired": 2}
    fleet.write_heartbeat(ctx.redis.client, ctx.keys, manager_id, state, ttl=30)


def stored(ctx: Context, host: str) -> int | None:
    return fleet.desired_size(ctx.redis.client, ctx.keys, host)


def test_an_unknown_host_is_a_404_and_leaves_nothing_in_redis(
    client: TestClient, admin: dict[str, str], ctx: Context
) -> None:
    response = client.put("/fleet/typo-host/size", json={"processes": 3}, headers=admin)
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == "host-not-found"
    assert stored(ctx, "typo-host") is None
    # A worker's heartbeat on a host is not a manager: nobody there would follow the size.
    fleet.write_heartbeat(
        ctx.redis.client, ctx.keys, "lone:1", {"kind": "worker", "host": "lone"}, ttl=30
    )
    assert client.put("/fleet/lone/size", json={"processes": 1}, headers=admin).status_code == 404


def test_a_host_with_a_live_manager_takes_a_size(
    client: TestClient, admin: dict[str, str], ctx: Context
) -> None:
    manager_beats(ctx, "web-1")
    response = client.put("/fleet/web-1/size", json={"processes": 3}, headers=admin)
    assert response.status_code == 200
    assert response.json() == {"host": "web-1", "processes": 3}
    assert stored(ctx, "web-1") == 3


def test_a_host_with_a_stored_size_takes_another_while_its_manager_is_away(
    client: TestClient, admin: dict[str, str], ctx: Context
) -> None:
    fleet.set_desired_size(ctx.redis.client, ctx.keys, "web-2", 4)
    assert client.put("/fleet/web-2/size", json={"processes": 0}, headers=admin).status_code == 200
    assert stored(ctx, "web-2") == 0


def test_delete_forgets_the_size_then_is_a_404(
    client: TestClient, admin: dict[str, str], ctx: Context
) -> None:
    manager_beats(ctx, "web-3")
    client.put("/fleet/web-3/size", json={"processes": 5}, headers=admin)
    response = client.delete("/fleet/web-3/size", headers=admin)
    assert response.status_code == 204
    assert response.content == b""
    assert stored(ctx, "web-3") is None
    again = client.delete("/fleet/web-3/size", headers=admin)
    assert again.status_code == 404
    assert again.json()["code"] == "host-not-found"


def test_only_admin_keys_size_the_fleet(
    client: TestClient, make_key: Callable[..., str], ctx: Context
) -> None:
    manager_beats(ctx, "web-4")
    producer = {"Authorization": f"Bearer {make_key('acme', 'producer')}"}
    put = client.put("/fleet/web-4/size", json={"processes": 1}, headers=producer)
    assert put.status_code == 403
    assert client.delete("/fleet/web-4/size", headers=producer).status_code == 403
    assert stored(ctx, "web-4") is None
