"""The dashboard's shell, in process: sign-in with an API key and its cookie, sign-out, CSRF,
the security headers, who may open which page, the overview, fleet and audit pages and the
audit events of their actions, and hostile input that must never reach a 5xx."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from fastapi.testclient import TestClient
from httpx import Response
from pydantic import SecretStr
from sqlalchemy import text

from app.dispatch import fleet as dispatch_fleet
from app.domain.schemas import JobCreate
from app.main import create_app
from app.services import auth, jobs
from app.services.auth import Principal, Scope
from app.services.context import Context
from app.services.keycache import KEY_CACHE_SECONDS
from app.settings import Environment, Settings
from app.ui import session as ui_session
from app.ui.pages_login import safe_next
from tests.helpers import wait_until

TOKEN = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_token(page: Response) -> str:
    found = TOKEN.search(page.text)
    assert found, page.text[:500]
    return found.group(1)


def sign_in(client: TestClient, key: str, next_url: str | None = None) -> Response:
    """The sign-in form's way: GET the form (its nonce cookie and token), POST the key."""
    form_page = client.get("/ui/login", params={"next": next_url} if next_url else None)
    assert form_page.status_code == 200
    fields = {"key": key, "csrf_token": csrf_token(form_page)}
    if next_url is not None:
        fields["next"] = next_url
    return client.post("/ui/login", data=fields, follow_redirects=False)


def signed_in(client: TestClient, key: str) -> TestClient:
    reply = sign_in(client, key)
    assert reply.status_code == 303, reply.text[:500]
    return client


def post_form(client: TestClient, path: str, page: str, **fields: Any) -> Response:
    """POST a form of the page at `page` (with that page's CSRF token)."""
    token = csrf_token(client.get(page))
    return client.post(path, data={"csrf_token": token, **fields}, follow_redirects=False)


def submit(ctx: Context, tenant: str, queue: str) -> str:
    producer = Principal(uuid.uuid4(), tenant, frozenset({Scope.PRODUCER}))
    return str(jobs.submit(ctx, producer, JobCreate(task="noop", queue=queue)).job.id)


def audit_actions(ctx: Context) -> list[tuple[str, dict[str, Any], str | None, str | None]]:
    """The audit events, but the keys the test made."""
    with ctx.db.transaction() as session:
        rows = session.execute(
            text(
                "SELECT action, target, tenant, request_id FROM audit_events "
                "WHERE action <> 'key.create' ORDER BY id"
            )
        ).all()
    return [(row.action, row.target, row.tenant, row.request_id) for row in rows]


@pytest.fixture
def clear_audit(ctx: Context) -> None:
    """The fixtures' keys were recorded as made by the command line."""
    with ctx.db.transaction() as session:
        session.execute(text("TRUNCATE audit_events"))


# Sign-in and sessions


def test_a_producer_key_signs_in_with_a_strict_httponly_signed_cookie_that_names_no_key(
    client: TestClient, make_key: Callable[..., str], ctx: Context
) -> None:
    key = make_key("acme", "producer")
    assert client.get("/ui/", follow_redirects=False).headers["location"].startswith("/ui/login")
    reply = sign_in(client, key)
    assert reply.status_code == 303 and reply.headers["location"] == "/ui/"
    cookies = [c for c in reply.headers.get_list("set-cookie") if c.startswith("jf_session=")]
    assert len(cookies) == 1
    attributes = [part.strip().lower() for part in cookies[0].split(";")]
    assert "httponly" in attributes and "samesite=strict" in attributes
    assert "path=/ui" in attributes and f"max-age={ctx.settings.ui_session_seconds}" in attributes
    assert "secure" not in attributes  # a test environment over http (see secure_cookies)
    value = cookies[0].split(";", 1)[0].split("=", 1)[1]
    assert key not in value and key.removeprefix("jf_") not in value
    opened = ui_session.open_cookie(ctx.settings, value)
    assert opened is not None and opened[0] == auth.key_digest(ctx, key)

    overview = client.get("/ui/")
    assert overview.status_code == 200
    assert 'data-testid="overview"' in overview.text and "Sign out" in overview.text
    # A producer's navigation has no admin pages.
    assert 'href="/ui/fleet"' not in overview.text and 'href="/ui/jobs"' in overview.text


def test_production_cookies_are_secure_even_behind_a_proxy_speaking_http(
    settings: Settings, ctx: Context
) -> None:
    production = settings.model_copy(
        update={"environment": Environment.PRODUCTION, "api_key_secret": SecretStr("s" * 32)}
    )
    keys = Context(production)
    try:
        _, key = auth.create_key(keys, "acme", [Scope.PRODUCER])
    finally:
        keys.close()
    app = create_app(production)

    def secure(reply: Response, name: str) -> bool:
        cookie = next(c for c in reply.headers.get_list("set-cookie") if c.startswith(f"{name}="))
        return "secure" in [part.strip().lower() for part in cookie.split(";")]

    # The app sees http (TLS ended at a proxy): its cookies are Secure all the same, so a
    # browser sends them back over https only.
    with TestClient(app, base_url="http://127.0.0.1") as client:
        assert secure(client.get("/ui/login"), "jf_login")
    with TestClient(app, base_url="https://dashboard.example") as client:
        reply = sign_in(client, key)
        assert reply.status_code == 303 and secure(reply, "jf_session")


def test_a_bad_key_is_refused(client: TestClient, make_key: Callable[..., str]) -> None:
    make_key("acme", "producer")
    reply = sign_in(client, "jf_" + "x" * 43)
    assert reply.status_code == 401
    assert "That key was not accepted" in reply.text
    assert "jf_session=" not in reply.headers.get("set-cookie", "")
    assert client.get("/ui/", follow_redirects=False).status_code == 303


@pytest.mark.parametrize("scopes", [("worker",), ("metrics",)])
def test_keys_without_producer_or_admin_scope_are_refused(
    client: TestClient, make_key: Callable[..., str], scopes: tuple[str, ...]
) -> None:
    reply = sign_in(client, make_key("acme", *scopes))
    assert reply.status_code == 403
    assert "That key was not accepted" in reply.text
    assert "jf_session=" not in reply.headers.get("set-cookie", "")


def test_a_revoked_keys_session_stops_working(
    client: TestClient, make_key: Callable[..., str], ctx: Context
) -> None:
    key = make_key("acme", "producer")
    signed_in(client, key)
    assert client.get("/ui/").status_code == 200
    cookie = client.cookies.get("jf_session")
    principal = auth.authenticate(ctx, f"Bearer {key}")
    auth.revoke_key(ctx, principal.key_id)
    # Another API process (a replica) that has not seen the key lately refuses it at once ...
    with TestClient(create_app(ctx.settings)) as replica:
        replica.cookies.set("jf_session", cookie or "", path="/ui")
        reply = replica.get("/ui/", follow_redirects=False)
        assert reply.status_code == 303 and reply.headers["location"].startswith("/ui/login")
    # ... and this one within its key cache's few seconds, as on the API.
    deadline = KEY_CACHE_SECONDS + 10

    def refused() -> bool:
        reply = client.get("/ui/", follow_redirects=False)
        return reply.status_code == 303 and reply.headers["location"].startswith("/ui/login")

    wait_until(refused, timeout=deadline)


def test_signing_out_ends_the_session_for_every_copy_of_its_cookie(
    client: TestClient, make_key: Callable[..., str]
) -> None:
    signed_in(client, make_key("acme", "producer"))
    copied = client.cookies.get("jf_session")
    assert copied
    reply = post_form(client, "/ui/logout", "/ui/")
    assert reply.status_code == 303 and reply.headers["location"] == "/ui/login"
    assert 'jf_session=""' in reply.headers.get("set-cookie", "")
    client.cookies.clear()
    client.cookies.set("jf_session", copied, path="/ui")
    again = client.get("/ui/", follow_redirects=False)
    assert again.status_code == 303 and again.headers["location"].startswith("/ui/login")


def test_an_expired_or_forged_cookie_leads_to_the_sign_in_page(
    client: TestClient, make_key: Callable[..., str], ctx: Context
) -> None:
    key = make_key("acme", "producer")
    digest = auth.key_digest(ctx, key)
    old = ui_session._serializer(ctx.settings)
    stale_settings = ctx.settings.model_copy(update={"ui_session_seconds": 60})
    value, _ = ui_session.seal(ctx.settings, digest)
    # Signed 61 s ago: past a 60 s lifetime.
    signer = old.make_signer(old.salt)
    payload = value.rsplit(".", 2)[0]
    back_dated = signer.sign(payload.encode()).decode()
    assert ui_session.open_cookie(stale_settings, back_dated) is not None
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(time, "time", lambda: 2_000_000_000.0)
        assert ui_session.open_cookie(stale_settings, back_dated) is None
    for forged in (value[:-2] + "xx", "not-a-cookie", value + "." * 5000, "\x00"):
        assert ui_session.open_cookie(ctx.settings, forged) is None
        client.cookies.set("jf_session", forged, path="/ui")
        reply = client.get("/ui/", follow_redirects=False)
        assert reply.status_code == 303 and reply.headers["location"].startswith("/ui/login")


def test_sign_in_returns_to_the_page_asked_for_and_never_to_another_site(
    client: TestClient, make_key: Callable[..., str]
) -> None:
    asked = client.get("/ui/audit?action=queue.pause", follow_redirects=False)
    location = asked.headers["location"]
    assert parse_qs(urlsplit(location).query)["next"] == ["/ui/audit?action=queue.pause"]
    key = make_key("acme", "producer")
    reply = sign_in(client, key, "/ui/audit?action=queue.pause")
    assert reply.headers["location"] == "/ui/audit?action=queue.pause"
    for hostile in (
        "https://evil.example/ui/",
        "//evil.example/ui/",
        "/\\evil.example",
        "\\\\evil.example",
        "/ui/../evil",
        "/ui/%2e%2e/x",
        "/uix",
        "/api",
        "javascript:alert(1)",
        "/ui/\r\nLocation: https://evil.example",
        "/ui/ x",
        "http:/ui/",
        "/ui/#frag",
        "/ui/" + "a" * 3000,
    ):
        client.cookies.clear()
        reply = sign_in(client, key, hostile)
        assert reply.status_code == 303, hostile
        assert reply.headers["location"] == "/ui/", hostile
    assert safe_next("/ui/jobs?queue=a&status=failed") == "/ui/jobs?queue=a&status=failed"
    assert safe_next("/ui") == "/ui"


# CSRF


def test_a_post_without_its_csrf_token_is_refused(
    client: TestClient, make_key: Callable[..., str], ctx: Context
) -> None:
    # Sign-in itself: no nonce cookie, or a token of another nonce.
    key = make_key("acme", "producer")
    bare = client.post("/ui/login", data={"key": key}, follow_redirects=False)
    assert bare.status_code == 403 and "CSRF" in bare.text
    client.get("/ui/login")
    wrong = client.post(
        "/ui/login", data={"key": key, "csrf_token": "0" * 64}, follow_redirects=False
    )
    assert wrong.status_code == 403 and "CSRF" in wrong.text
    assert client.get("/ui/", follow_redirects=False).status_code == 303

    signed_in(client, make_key("ops", "admin"))
    another_session_token = csrf_token(client.get("/ui/"))
    for fields in ({}, {"csrf_token": ""}, {"csrf_token": "x" * 64}, {"csrf_token": "\x00"}):
        reply = client.post("/ui/queues/default/pause", data=fields, follow_redirects=False)
        assert reply.status_code == 403 and "CSRF" in reply.text, fields
    # A JSON body is no form: refused the same way.
    reply = client.post(
        "/ui/queues/default/pause",
        json={"csrf_token": another_session_token},
        follow_redirects=False,
    )
    assert reply.status_code == 403 and "CSRF" in reply.text
    assert "default" not in dispatch_fleet.paused_queues(ctx.redis.client, ctx.keys)
    # The token of another session does not fit this one.
    other = TestClient(client.app)
    signed_in(other, make_key("ops", "admin"))
    reply = other.post(
        "/ui/queues/default/pause",
        data={"csrf_token": another_session_token},
        follow_redirects=False,
    )
    assert reply.status_code == 403
    # Sign-out is a form like any other.
    assert client.post("/ui/logout", follow_redirects=False).status_code == 403


# Headers


PAGES = ["/ui/", "/ui/login", "/ui/fleet", "/ui/audit", "/ui/schedules", "/ui/no-such-page",
         "/ui/static/app.css"]  # fmt: skip


def test_every_dashboard_response_carries_the_security_headers(
    client: TestClient, make_key: Callable[..., str]
) -> None:
    def check(reply: Response, path: str) -> None:
        csp = reply.headers.get("content-security-policy", "")
        assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp, path
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp, path
        assert reply.headers.get("x-content-type-options") == "nosniff", path
        assert reply.headers.get("referrer-policy") == "same-origin", path
        if not path.startswith("/ui/static/"):
            assert reply.headers.get("cache-control") == "no-store", path

    for path in PAGES:  # signed out: redirects, the sign-in page, a 404 page
        check(client.get(path, follow_redirects=False), path)
    signed_in(client, make_key("acme", "producer"))
    for path in PAGES:  # a producer: pages and 403 pages
        check(client.get(path), path)
    signed_in(client, make_key("ops", "admin"))
    for path in PAGES:
        reply = client.get(path)
        check(reply, path)
        if reply.headers["content-type"].startswith("text/html"):
            assert "<script>" not in reply.text and " style=" not in reply.text
            assert not re.search(r"<[^>]+\son[a-z]+=", reply.text), path  # no inline handlers
    check(client.post("/ui/queues/default/pause", data={}), "/ui/queues/default/pause")
    # The API's replies are the API's: no dashboard policy on them.
    assert "content-security-policy" not in client.get("/health").headers


def test_static_files_are_served_with_a_version_in_their_url(client: TestClient) -> None:
    page = client.get("/ui/login").text
    for name in ("app.css", "app.js", "favicon.svg"):
        found = re.search(rf'"/ui/static/{re.escape(name)}\?v=([0-9a-f]{{12}})"', page)
        assert found, name
        reply = client.get(f"/ui/static/{name}?v={found.group(1)}")
        assert reply.status_code == 200 and reply.content
    for outside in ("/ui/static/../settings.py", "/ui/static/%2e%2e/session.py", "/ui/static/"):
        reply = client.get(outside, follow_redirects=False)
        assert reply.status_code in (303, 404) and b"import" not in reply.content, outside


# Who sees what


def test_a_producer_may_not_open_or_post_to_the_admin_pages(
    client: TestClient, make_key: Callable[..., str], ctx: Context
) -> None:
    signed_in(client, make_key("acme", "producer"))
    for path in ("/ui/fleet", "/ui/audit", "/ui/audit?tenant=ops"):
        reply = client.get(path)
        assert reply.status_code in (403, 404), path
        assert 'data-testid="hosts"' not in reply.text and 'data-testid="audit"' not in reply.text
    token = csrf_token(client.get("/ui/"))
    for path, fields in (
        ("/ui/queues/default/pause", {}),
        ("/ui/queues/default/resume", {}),
        ("/ui/fleet/somehost/size", {"processes": "3"}),
    ):
        reply = client.post(path, data={"csrf_token": token, **fields}, follow_redirects=False)
        assert reply.status_code in (403, 404), path
    assert "default" not in dispatch_fleet.paused_queues(ctx.redis.client, ctx.keys)
    # Nor look at another tenant's overview.
    assert client.get("/ui/?tenant=other").status_code == 403


def test_the_overview_shows_each_queue_of_the_callers_tenant(
    client: TestClient, make_key: Callable[..., str], ctx: Context
) -> None:
    for _ in range(3):
        submit(ctx, "acme", "mail")
    submit(ctx, "other", "secret-queue")
    signed_in(client, make_key("acme", "producer"))
    page = client.get("/ui/")
    row = re.search(r'<tr data-queue="mail">(.*?)</tr>', page.text, flags=re.S)
    assert row, page.text
    assert re.search(r'data-col="queued">3<', row.group(1))
    assert re.search(r'data-col="ready">3<', row.group(1))
    assert "secret-queue" not in page.text
    assert 'data-refresh="' in page.text and 'id="overview-live"' in page.text

    admin = TestClient(client.app)
    signed_in(admin, make_key("ops", "admin"))
    everyone = admin.get("/ui/").text
    assert 'data-queue="mail"' in everyone and 'data-queue="secret-queue"' in everyone
    only_other = admin.get("/ui/?tenant=other").text
    assert 'data-queue="secret-queue"' in only_other and 'data-queue="mail"' not in only_other
    assert admin.get("/ui/?tenant=").status_code == 200  # an empty filter is no filter


# Fleet and audit pages


def beat_manager(ctx: Context, host: str, processes: int = 2) -> None:
    """A live manager's heartbeat, as a fleet writes it."""
    state = {
        "kind": "manager",
        "worker_id": f"{host}:manager",
        "host": host,
        "pid": 4242,
        "queues": ["default"],
        "desired": processes,
        "processes": processes,
        "state": "running",
        "seen_at": "2030-01-01T00:00:00+00:00",
    }
    dispatch_fleet.write_heartbeat(ctx.redis.client, ctx.keys, f"{host}:manager", state, 60)


def test_an_admin_resizes_a_host_and_pauses_a_queue_through_the_pages_and_the_api_agrees(
    client: TestClient,
    make_key: Callable[..., str],
    ctx: Context,
    admin: dict[str, str],
    clear_audit: None,
) -> None:
    host = f"host-{uuid.uuid4().hex[:6]}"
    beat_manager(ctx, host)
    submit(ctx, "acme", "default")
    signed_in(client, make_key("ops", "admin"))
    fleet_page = client.get("/ui/fleet")
    assert fleet_page.status_code == 200
    assert 'data-testid="hosts"' in fleet_page.text and f'data-host="{host}"' in fleet_page.text

    resized = post_form(client, f"/ui/fleet/{host}/size", "/ui/fleet", processes="5")
    assert resized.status_code == 303 and resized.headers["location"] == "/ui/fleet"
    shown = client.get("/ui/fleet")
    assert f"{host}" in shown.text and 'role="status"' in shown.text
    assert dispatch_fleet.desired_size(ctx.redis.client, ctx.keys, host) == 5

    paused = post_form(client, "/ui/queues/default/pause", "/ui/fleet")
    assert paused.status_code == 303
    queues = client.get("/queues", headers=admin).json()
    assert {"queue": "default", "paused": True}.items() <= next(
        q for q in queues if q["queue"] == "default"
    ).items()
    assert re.search(r'<tr data-queue="default".*?paused', client.get("/ui/fleet").text, flags=re.S)

    resumed = post_form(client, "/ui/queues/default/resume", "/ui/fleet")
    assert resumed.status_code == 303
    assert not next(
        q for q in client.get("/queues", headers=admin).json() if q["queue"] == "default"
    )["paused"]

    actions = audit_actions(ctx)
    assert [a[0] for a in actions] == ["fleet.resize", "queue.pause", "queue.resume"]
    assert actions[0][1] == {"host": host, "processes": 5}
    assert actions[1][1] == {"queue": "default"}
    assert all(tenant == "ops" and request_id for _, _, tenant, request_id in actions)
    # The request id of the action is the one its reply carried.
    assert actions[1][3] == paused.headers["x-request-id"]

    audit_page = client.get("/ui/audit")
    assert audit_page.status_code == 200 and 'data-testid="audit"' in audit_page.text
    assert "queue.pause" in audit_page.text and paused.headers["x-request-id"] in audit_page.text
    only_pauses = client.get("/ui/audit?action=queue.pause").text
    assert re.findall(r'data-action="([^"]+)"', only_pauses) == ["queue.pause"]


def test_the_fleet_page_refuses_bad_sizes_and_unknown_hosts_without_a_5xx(
    client: TestClient, make_key: Callable[..., str], ctx: Context, clear_audit: None
) -> None:
    host = f"host-{uuid.uuid4().hex[:6]}"
    beat_manager(ctx, host)
    signed_in(client, make_key("ops", "admin"))
    token = csrf_token(client.get("/ui/fleet"))
    for value in ("-1", "257", "x", "", "9" * 40, "1e3", "\x00", "5\x00"):
        reply = client.post(
            f"/ui/fleet/{host}/size",
            data={"csrf_token": token, "processes": value},
            follow_redirects=False,
        )
        assert reply.status_code in (303, 400, 422), value
        if reply.status_code == 303:
            assert "error" in client.get(reply.headers["location"]).text.lower()
    assert dispatch_fleet.desired_size(ctx.redis.client, ctx.keys, host) is None
    missing = client.post(
        "/ui/fleet/no-such-host/size",
        data={"csrf_token": token, "processes": "2"},
        follow_redirects=False,
    )
    assert missing.status_code in (303, 404)
    for bad_host in ("bad%20host", "a" * 300, "x%00y"):
        reply = client.post(
            f"/ui/fleet/{bad_host}/size",
            data={"csrf_token": token, "processes": "2"},
            follow_redirects=False,
        )
        assert reply.status_code < 500, bad_host
    assert audit_actions(ctx) == []


# Odd input


HOSTILE_QUERIES = [
    "tenant=" + "%00",
    "tenant=" + "a" * 5000,
    "tenant=%ff%fe",
    "tenant=%F0%9F%92%A9",
    "tenant=a&tenant=b",
    "action=nope",
    "cursor=" + "9" * 100,
    "cursor=%00",
    "cursor=" + "A" * 300,
    "since=not-a-date",
    "since=99999-01-01T00:00:00Z",
    "key_id=not-a-uuid",
    "limit=" + "9" * 40,
    "limit=-1",
]


@pytest.mark.parametrize("path", ["/ui/", "/ui/fleet", "/ui/audit", "/ui/login"])
def test_odd_inputs_never_reach_a_5xx(
    client: TestClient, make_key: Callable[..., str], path: str
) -> None:
    signed_in(client, make_key("ops", "admin"))
    for query in HOSTILE_QUERIES:
        reply = client.get(f"{path}?{query}")
        assert reply.status_code < 500, (path, query, reply.text[:300])
        assert reply.headers["content-type"].startswith("text/html"), (path, query)
    token = csrf_token(client.get("/ui/"))
    for queue in ("a" * 65, "bad queue", "x%00y", "%ff", "é"):
        reply = client.post(f"/ui/queues/{queue}/pause", data={"csrf_token": token})
        assert reply.status_code < 500, queue
    for body in (b"\xff\xfe", b"csrf_token=%ff", b"a=" + b"b&" * 5000, b"%"):
        reply = client.post(
            "/ui/queues/default/pause",
            content=body,
            headers={"content-type": "application/x-www-form-urlencoded"},
        )
        assert reply.status_code == 403, body[:20]
    # Sign-in with odd keys and odd next values.
    client.cookies.clear()
    for key in ("", "\x00", "k" * 10_000, "jf_\u202e", "Bearer x"):
        reply = sign_in(client, key)
        assert reply.status_code in (401, 403), key[:20]
