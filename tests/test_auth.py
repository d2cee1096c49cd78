"""API keys: 401 for missing, wrong and revoked keys; scopes; tenant isolation; the CLI."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid
from typing import Any

import pytest
from fastapi.security import HTTPAuthorizationCredentials
from fastapi.testclient import TestClient
from sqlalchemy import text

from app.api import deps
from app.domain.errors import Unauthorized
from app.services import auth
from app.services.context import Context
from app.services.keycache import KEY_CACHE_SECONDS
from app.settings import Settings
from tests.helpers import ROOT, settings_env, wait_until


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_missing_malformed_and_wrong_keys_get_401(client: TestClient, make_key: Any) -> None:
    real = make_key("acme")
    attempts: list[dict[str, str]] = [
        {},
        {"Authorization": real},
        {"Authorization": f"Basic {real}"},
        bearer(real + "x"),
        bearer("jf_" + "a" * 43),
    ]
    for headers in attempts:
        response = client.get("/jobs", headers=headers)
        assert response.status_code == 401, headers
        assert response.json()["code"] == "unauthorized"
        assert response.headers["content-type"] == "application/problem+json"
    assert client.get("/jobs", headers=bearer(real)).status_code == 200


def test_revoked_key_gets_401(client: TestClient, ctx: Context) -> None:
    row, plain = auth.create_key(ctx, "acme", [auth.Scope.PRODUCER])
    assert client.get("/jobs", headers=bearer(plain)).status_code == 200
    auth.revoke_key(ctx, row.id)
    # Each API process trusts a verified key for KEY_CACHE_SECONDS, then asks Postgres again.
    wait_until(
        lambda: client.get("/jobs", headers=bearer(plain)).status_code == 401,
        timeout=KEY_CACHE_SECONDS + 5,
        interval=0.2,
    )


def test_requests_that_find_a_key_unverified_together_share_one_verification(
    ctx: Context, make_key: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Twenty requests that arrive with a key its process has not verified (or whose cache
    entry has just expired) wait for one Postgres verification, not twenty; a wrong key's
    waiters all get its 401."""
    asked: list[str] = []
    verify = auth._verify

    def counted(context: Context, digest: str) -> auth.Principal:
        asked.append(digest)
        return verify(context, digest)

    monkeypatch.setattr(auth, "_verify", counted)

    async def together(key: str) -> list[auth.Principal | BaseException]:
        credentials = HTTPAuthorizationCredentials(scheme="Bearer", credentials=key)
        waits = [deps._verified(ctx, credentials) for _ in range(20)]
        return await asyncio.gather(*waits, return_exceptions=True)

    good = make_key("acme")
    principals = asyncio.run(together(good))
    assert len(asked) == 1
    assert {p.tenant for p in principals if isinstance(p, auth.Principal)} == {"acme"}
    assert len(principals) == 20 and all(isinstance(p, auth.Principal) for p in principals)

    asked.clear()
    refused = asyncio.run(together("jf_not-a-key-of-this-api"))
    assert len(asked) == 1
    assert all(isinstance(r, Unauthorized) for r in refused) and len(refused) == 20
    assert not deps._verifying  # nothing left behind for the next request to find


def test_keys_are_stored_only_as_hmac(ctx: Context) -> None:
    row, plain = auth.create_key(ctx, "acme", [auth.Scope.PRODUCER])
    assert plain.startswith("jf_") and plain not in row.key_hash
    assert row.key_hash == auth.hash_key(ctx.settings.hashing_secret, plain)
    with ctx.db.transaction() as session:
        stored = session.scalar(
            text("SELECT key_hash FROM api_keys WHERE id = :id"), {"id": row.id}
        )
    assert stored == row.key_hash


def test_a_worker_key_cannot_submit(client: TestClient, make_key: Any) -> None:
    response = client.post(
        "/jobs", json={"task": "echo"}, headers=bearer(make_key("acme", "worker"))
    )
    assert response.status_code == 403
    assert response.json()["code"] == "forbidden"


def test_tenants_never_see_each_other(client: TestClient, make_key: Any) -> None:
    acme, globex = bearer(make_key("acme")), bearer(make_key("globex"))
    job = client.post("/jobs", json={"task": "echo"}, headers=acme).json()
    for method, path in [
        ("GET", f"/jobs/{job['id']}"),
        ("POST", f"/jobs/{job['id']}/cancel"),
        ("POST", f"/jobs/{job['id']}/retry"),
        ("DELETE", f"/jobs/{job['id']}"),
    ]:
        response = client.request(method, path, headers=globex)
        assert response.status_code == 404, (method, path)
    assert client.get("/jobs", headers=globex).json()["total"] == 0
    assert client.get(f"/jobs/{job['id']}", headers=acme).json()["status"] == "queued"


def test_admin_sees_every_tenant(client: TestClient, make_key: Any) -> None:
    acme = bearer(make_key("acme"))
    job = client.post("/jobs", json={"task": "echo"}, headers=acme).json()
    admin = bearer(make_key("ops", "admin"))
    assert client.get(f"/jobs/{job['id']}", headers=admin).status_code == 200
    listed = client.get("/jobs", headers=admin).json()
    assert [j["tenant"] for j in listed["items"]] == ["acme"]


def run_cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app", *args],
        cwd=ROOT,
        env=settings_env(settings),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_keys_cli_creates_lists_and_revokes(
    settings: Settings, ctx: Context, client: TestClient
) -> None:
    created = run_cli(settings, "keys", "create", "--tenant", "cli-co", "--scope", "producer")
    assert created.returncode == 0, created.stderr
    lines = created.stdout.splitlines()
    # The id on the first line, for a script to revoke the key it made; the key alone, last.
    assert lines[0].startswith("created key ")
    key_id, key = lines[0].split()[2], lines[-1]
    uuid.UUID(key_id)
    assert key.startswith("jf_")
    assert client.get("/jobs", headers=bearer(key)).status_code == 200

    listed = run_cli(settings, "keys", "list", "--tenant", "cli-co")
    assert listed.returncode == 0
    assert listed.stdout.split()[:5] == [key_id, "cli-co", "producer", "-", "active"]
    assert key not in listed.stdout

    revoked = run_cli(settings, "keys", "revoke", key_id)
    assert (revoked.returncode, revoked.stdout) == (0, f"revoked {key_id}\n"), revoked.stderr
    wait_until(
        lambda: client.get("/jobs", headers=bearer(key)).status_code == 401,
        timeout=KEY_CACHE_SECONDS + 5,
        interval=0.2,
    )
    again = run_cli(settings, "keys", "revoke", key_id)
    assert again.returncode == 1
    assert again.stderr == f"error: no active API key with id {key_id}\n"


def test_keys_list_shows_active_keys_unless_all(settings: Settings, ctx: Context) -> None:
    gone, _ = auth.create_key(ctx, "acme", [auth.Scope.PRODUCER])
    kept, _ = auth.create_key(ctx, "acme", [auth.Scope.WORKER], "w1")
    other, _ = auth.create_key(ctx, "globex", [auth.Scope.ADMIN])
    auth.revoke_key(ctx, gone.id)

    acme = run_cli(settings, "keys", "list", "--tenant", "acme")
    assert acme.returncode == 0, acme.stderr
    assert [line.split()[0] for line in acme.stdout.splitlines()] == [str(kept.id)]
    everything = run_cli(settings, "keys", "list", "--all")
    assert everything.returncode == 0, everything.stderr
    assert [line.split()[:5] for line in everything.stdout.splitlines()] == [
        [str(gone.id), "acme", "producer", "-", "revoked"],
        [str(kept.id), "acme", "worker", "w1", "active"],
        [str(other.id), "globex", "admin", "-", "active"],
    ]


def test_keys_revoke_takes_several_ids_and_reports_each_it_cannot_revoke(
    settings: Settings, ctx: Context
) -> None:
    first, _ = auth.create_key(ctx, "acme", [auth.Scope.PRODUCER])
    second, _ = auth.create_key(ctx, "acme", [auth.Scope.WORKER])
    unknown = uuid.uuid4()

    revoked = run_cli(settings, "keys", "revoke", str(first.id), str(unknown), str(second.id))
    # Like `rm a b c`: what can be revoked is, each failure is said, and the status tells.
    assert revoked.returncode == 1
    assert revoked.stdout == f"revoked {first.id}\nrevoked {second.id}\n"
    assert revoked.stderr == f"error: no active API key with id {unknown}\n"
    assert auth.list_keys(ctx) == []
    assert len(auth.list_keys(ctx, include_revoked=True)) == 2


def test_keys_cli_refuses_what_is_not_a_key_id(settings: Settings) -> None:
    for args in (["revoke"], ["revoke", "not-a-uuid"]):
        refused = run_cli(settings, "keys", *args)
        assert refused.returncode == 2, args
        assert refused.stderr.startswith("usage: python -m app keys revoke"), refused.stderr
        assert "Traceback" not in refused.stderr
    assert "'not-a-uuid' is not a key id" in refused.stderr


def test_keys_cli_creates_a_metrics_key(
    settings: Settings, ctx: Context, client: TestClient
) -> None:
    created = run_cli(settings, "keys", "create", "--tenant", "ops", "--scope", "metrics")
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip().splitlines()[-1]
    assert "scopes metrics" in created.stdout
    assert client.get("/metrics", headers=bearer(key)).status_code == 200
    assert client.get("/jobs", headers=bearer(key)).status_code == 403
