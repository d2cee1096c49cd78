"""The audit log: every change an API key or the command line makes is recorded with who, what,
when and the request id, in the transaction of the change; GET /audit serves it to admins;
nobody rewrites it, and retention removes only old events."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from app.dispatch import fleet as dispatch_fleet
from app.domain.audit import AuditFilter
from app.domain.cursor import encode_position
from app.services import audit, auth, execution, fleet, jobs
from app.services.auth import Principal, Scope
from app.services.context import Context
from app.services.maintenance import Retention
from app.settings import Settings
from tests.fleet_support import job_row, submit
from tests.helpers import ROOT, settings_env


def principal_of(ctx: Context, headers: dict[str, str]) -> Principal:
    return auth.authenticate(ctx, headers["Authorization"])


def sql(ctx: Context, statement: str, **params: Any) -> Any:
    with ctx.db.transaction() as session:
        return session.execute(text(statement), params)


def events(ctx: Context) -> list[Any]:
    with ctx.db.transaction() as session:
        return list(session.execute(text("SELECT * FROM audit_events ORDER BY id")).all())


def set_status(ctx: Context, job_id: str, status: str) -> None:
    sql(ctx, "UPDATE jobs SET status = :s, finished_at = now() WHERE id = :id", s=status, id=job_id)


def cli(settings: Settings, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "app", "keys", *args],
        cwd=ROOT,
        env=settings_env(settings),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stdout


def test_every_change_is_recorded_with_who_what_when_and_its_request_id(
    client: TestClient,
    ctx: Context,
    settings: Settings,
    producer: dict[str, str],
    admin: dict[str, str],
) -> None:
    maker, operator = principal_of(ctx, producer), principal_of(ctx, admin)
    sql(ctx, "TRUNCATE audit_events")  # the fixtures' keys were recorded as made by the CLI
    started = datetime.now(UTC)
    queued, running, cancelled, doomed, dead, dead_too, dead_three = (
        submit(ctx, task="noop") for _ in range(7)
    )
    execution.claim(ctx, [running], "host:1:1")
    set_status(ctx, cancelled, "cancelled")
    for job_id in (dead, dead_too, dead_three):
        set_status(ctx, job_id, "failed")
    dispatch_fleet.write_heartbeat(
        ctx.redis.client, ctx.keys, "host-a:manager", {"kind": "manager", "host": "host-a"}, 30
    )

    def call(method: str, path: str, who: dict[str, str], **kwargs: Any) -> tuple[str, Any]:
        request_id = f"req-{uuid.uuid4().hex[:12]}"
        reply = client.request(method, path, headers={**who, "X-Request-ID": request_id}, **kwargs)
        assert reply.status_code < 300, (path, reply.text)
        return request_id, reply

    made: dict[str, tuple[str, Principal, dict[str, Any]]] = {}  # request id -> what, who, target

    def expect(request_id: str, what: str, who: Principal, **target: Any) -> None:
        made[request_id] = (what, who, target)

    rid, _ = call("POST", f"/jobs/{queued}/cancel", producer)
    expect(rid, "job.cancel", maker, job_ids=[queued], tenant="acme")
    rid, reply = call("POST", f"/jobs/{running}/cancel", producer)
    assert reply.status_code == 202
    expect(rid, "job.cancel", maker, job_ids=[running], requested=True)
    rid, _ = call("POST", f"/jobs/{cancelled}/retry", producer)
    expect(rid, "job.retry", maker, job_ids=[cancelled])
    rid, _ = call("DELETE", f"/jobs/{doomed}", admin)  # an admin acting on acme's job
    expect(rid, "job.delete", operator, job_ids=[doomed], tenant="acme")
    rid, _ = call("POST", f"/dlq/{dead}/replay", producer)
    expect(rid, "job.replay", maker, job_ids=[dead])
    rid, _ = call("POST", "/dlq/replay", producer, json={"ids": [dead_too]})
    expect(rid, "job.replay", maker, job_ids=[dead_too], tenant="acme")
    rid, _ = call("DELETE", f"/dlq/{dead_three}", producer)
    expect(rid, "job.delete", maker, job_ids=[dead_three])
    body = {"action": "cancel", "filter": {"queue": "default", "tenant": "globex"}}
    rid, reply = call("POST", "/bulk", producer, json=body)
    operation = reply.json()["id"]
    bulk_filter = {"queue": "default", "tenant": "acme"}  # a producer's own tenant, forced
    expect(rid, "bulk.start", maker, operation_id=operation, action="cancel", filter=bulk_filter)
    rid, _ = call("POST", f"/bulk/{operation}/cancel", producer)
    expect(rid, "bulk.cancel", maker, operation_id=operation)
    rid, _ = call("POST", "/queues/mail/pause", admin)
    expect(rid, "queue.pause", operator, queue="mail")
    rid, _ = call("POST", "/queues/mail/resume", admin)
    expect(rid, "queue.resume", operator, queue="mail")
    rid, _ = call("PUT", "/fleet/host-a/size", admin, json={"processes": 3})
    expect(rid, "fleet.resize", operator, host="host-a", processes=3)
    rid, _ = call("DELETE", "/fleet/host-a/size", admin)
    expect(rid, "fleet.clear", operator, host="host-a")
    # What is refused changes nothing, and records nothing.
    assert client.post(f"/jobs/{queued}/cancel", headers=producer).status_code == 409
    assert client.post("/bulk", headers=producer, json={**body, "dry_run": True}).status_code == 200

    # The command line: keys made and revoked by a person at the deployment's shell.
    created = cli(settings, "create", "--tenant", "newco", "--scope", "producer", "--name", "n")
    key_id = created.split()[2]
    cli(settings, "revoke", key_id)

    reply = client.get("/audit", params={"limit": 100}, headers=admin)
    assert reply.status_code == 200
    served = reply.json()["items"]
    assert [e["id"] for e in served] == sorted((e["id"] for e in served), reverse=True)
    by_request = {e["request_id"]: e for e in served if e["request_id"] in made}
    assert set(by_request) == set(made), "every change recorded, once"
    for request_id, (action, who, target) in made.items():
        event = by_request[request_id]
        assert event["action"] == action, request_id
        assert (event["actor"], event["key_id"], event["tenant"]) == (
            "key",
            str(who.key_id),
            who.tenant,
        )
        assert target.items() <= event["target"].items(), (action, event["target"])
        assert started - timedelta(seconds=5) <= datetime.fromisoformat(event["at"])
    by_cli = [e for e in served if e["actor"] == "cli"]
    assert [e["action"] for e in by_cli] == ["key.revoke", "key.create"]
    assert all(e["key_id"] is None and e["tenant"] is None for e in by_cli)
    assert by_cli[1]["target"] == {
        "key_id": key_id,
        "tenant": "newco",
        "scopes": ["producer"],
        "name": "n",
    }
    assert by_cli[0]["target"] == {"key_id": key_id}
    assert len(served) == len(made) + 2


@contextmanager
def audit_refused(ctx: Context) -> Iterator[None]:
    """Every audit insert fails while the block runs."""
    sql(
        ctx,
        "CREATE FUNCTION refuse_audit() RETURNS trigger LANGUAGE plpgsql AS $$ "
        "BEGIN RAISE EXCEPTION 'refused'; END $$",
    )
    sql(
        ctx,
        "CREATE TRIGGER refuse_audit BEFORE INSERT ON audit_events "
        "FOR EACH ROW EXECUTE FUNCTION refuse_audit()",
    )
    try:
        yield
    finally:
        sql(ctx, "DROP TRIGGER refuse_audit ON audit_events")
        sql(ctx, "DROP FUNCTION refuse_audit()")


def test_a_change_commits_with_its_event_or_not_at_all(ctx: Context) -> None:
    someone = Principal(uuid.uuid4(), "acme", frozenset({Scope.ADMIN}))
    job_id = submit(ctx, task="noop")
    with audit_refused(ctx):
        with pytest.raises(DBAPIError):
            jobs.cancel(ctx, someone, uuid.UUID(job_id))
        # Redis changes come after their event commits: no event, no pause.
        with pytest.raises(DBAPIError):
            fleet.pause(ctx, someone, "mail")
    assert job_row(ctx, job_id).status == "queued"
    assert "mail" not in dispatch_fleet.paused_queues(ctx.redis.client, ctx.keys)
    assert events(ctx) == []
    jobs.cancel(ctx, someone, uuid.UUID(job_id))
    assert [e.action for e in events(ctx)] == ["job.cancel"]


def test_get_audit_is_for_admins_and_filters_by_tenant_key_action_and_time(
    client: TestClient,
    ctx: Context,
    make_key: Callable[..., str],
    admin: dict[str, str],
    producer: dict[str, str],
) -> None:
    globex = {"Authorization": f"Bearer {make_key('globex', 'producer')}"}
    sql(ctx, "TRUNCATE audit_events")
    for who in (producer, globex, producer):
        job_id = client.post("/jobs", json={"task": "noop"}, headers=who).json()["id"]
        assert client.post(f"/jobs/{job_id}/cancel", headers=who).status_code == 200
    assert client.post("/queues/mail/pause", headers=admin).status_code == 200

    assert client.get("/audit", headers=producer).status_code == 403
    assert client.get("/audit", headers=producer).json()["code"] == "forbidden"

    def served(**params: Any) -> list[dict[str, Any]]:
        reply = client.get("/audit", params=params, headers=admin)
        assert reply.status_code == 200, reply.text
        return list(reply.json()["items"])

    assert [e["action"] for e in served()] == ["queue.pause"] + ["job.cancel"] * 3
    assert {e["tenant"] for e in served(tenant="acme")} == {"acme"}
    assert len(served(tenant="acme")) == 2
    globex_key = str(principal_of(ctx, globex).key_id)
    assert [e["key_id"] for e in served(key_id=globex_key)] == [globex_key]
    assert [e["target"] for e in served(action="queue.pause")] == [{"queue": "mail"}]
    assert served(since=(datetime.now(UTC) + timedelta(hours=1)).isoformat()) == []
    assert len(served(since=(datetime.now(UTC) - timedelta(hours=1)).isoformat())) == 4
    assert client.get("/audit?action=job.explode", headers=admin).status_code == 422

    # Keyset pages, newest first, each event once.
    pages, cursor = [], None
    while True:
        params = {"limit": 3, **({"cursor": cursor} if cursor else {})}
        reply = client.get("/audit", params=params, headers=admin).json()
        pages.append([e["id"] for e in reply["items"]])
        cursor = reply["next_cursor"]
        if cursor is None:
            break
    assert [len(p) for p in pages] == [3, 1]
    assert [i for page in pages for i in page] == [e["id"] for e in served()]
    for bad in ("bm9wZQ", encode_position("-1"), encode_position(str(10**28))):  # "nope"
        reply = client.get("/audit", params={"cursor": bad}, headers=admin)
        assert (reply.status_code, reply.json()["code"]) == (422, "validation-error")

    # The service itself never shows a non-admin key another tenant's events.
    reader = principal_of(ctx, globex)
    page = audit.list_events(ctx, reader, AuditFilter(tenant="acme"), 50, None)
    assert [(e.tenant, e.action) for e in page.items] == [("globex", "job.cancel")]


def test_events_are_never_rewritten_and_retention_takes_only_old_ones(
    ctx: Context, settings: Settings
) -> None:
    someone = Principal(uuid.uuid4(), "acme", frozenset({Scope.ADMIN}))
    sql(
        ctx,
        "INSERT INTO audit_events (at, actor, action, target) "
        "VALUES (now() - interval '400 days', 'cli', 'key.create', '{}')",
    )
    fleet.pause(ctx, someone, "mail")
    (old, recent) = events(ctx)
    with pytest.raises(DBAPIError, match="append-only"):
        sql(ctx, "UPDATE audit_events SET tenant = 'nobody' WHERE id = :id", id=old.id)
    with pytest.raises(DBAPIError, match="younger than a day"):
        sql(ctx, "DELETE FROM audit_events WHERE id = :id", id=recent.id)
    # The application never writes an UPDATE or DELETE of the table but retention's.
    source = (ROOT / "app" / "store" / "audit.py").read_text()
    assert "update(" not in source and source.count("delete(") == 1

    Retention(ctx).run_once(time.time())
    assert [e.id for e in events(ctx)] == [recent.id]
    assert settings.audit_retention_seconds == 365 * 86_400
