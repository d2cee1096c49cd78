"""Real Postgres and Redis, isolated: a database and a Redis key prefix made for this run.

The servers are the ones at DATABASE_URL and REDIS_URL (./scripts/test.sh starts private ones
when those do not answer). The test database is created fresh and dropped at the end; every
Redis key the tests write carries a prefix of their own and is deleted at the end.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator

import pytest
import redis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import text
from sqlalchemy.engine import make_url

from app.main import create_app
from app.services import auth
from app.services.context import Context
from app.settings import Settings, load_settings
from app.store.admin import drop_database, migrate
from tests.helpers import LiveAPI

DEFAULT_DATABASE_URL = "postgresql+psycopg2://postgres@127.0.0.1:5432/jobfleet"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


def delete_prefix(client: redis.Redis, prefix: str) -> None:
    keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
    if keys:
        client.delete(*keys)


@pytest.fixture(scope="session")
def settings() -> Iterator[Settings]:
    run = uuid.uuid4().hex[:8]
    base = make_url(os.environ.get("DATABASE_URL", DEFAULT_DATABASE_URL))
    database_url = base.set(database=f"jobfleet_test_{run}").render_as_string(hide_password=False)
    test_settings = load_settings(
        environment="test",
        database_url=database_url,
        redis_url=os.environ.get("REDIS_URL", DEFAULT_REDIS_URL),
        key_prefix=f"jftest{run}",
        rate_limit_submit="100000/minute",
        rate_limit_read="100000/minute",
        rate_limit_write="100000/minute",
        rate_limit_admin="100000/minute",
        log_level="WARNING",
        # Tests that want the API's metrics port give it a free one; 9101 may be in use.
        api_metrics_port=0,
    )
    migrate(test_settings.database_url)
    yield test_settings
    drop_database(test_settings.database_url)
    client = redis.Redis.from_url(test_settings.redis_url)
    delete_prefix(client, test_settings.key_prefix)
    client.close()


@pytest.fixture(scope="session")
def session_ctx(settings: Settings) -> Iterator[Context]:
    context = Context(settings)
    yield context
    context.close()


@pytest.fixture
def ctx(session_ctx: Context) -> Iterator[Context]:
    """The shared context, with empty tables and no Redis keys of ours before each test."""
    with session_ctx.db.transaction() as session:
        session.execute(text("TRUNCATE jobs, job_attempts, api_keys CASCADE"))
    delete_prefix(session_ctx.redis.client, session_ctx.settings.key_prefix)
    return session_ctx


@pytest.fixture
def make_key(ctx: Context) -> Callable[..., str]:
    def make(tenant: str = "acme", *scopes: str) -> str:
        chosen = [auth.Scope(s) for s in (scopes or ("producer",))]
        _, plain = auth.create_key(ctx, tenant, chosen)
        return plain

    return make


@pytest.fixture
def app(settings: Settings, ctx: Context) -> FastAPI:
    return create_app(settings)


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app) as test_client:
        yield test_client


@pytest.fixture
def producer(make_key: Callable[..., str]) -> dict[str, str]:
    """Authorization headers of a producer key of tenant `acme`."""
    return {"Authorization": f"Bearer {make_key('acme', 'producer')}"}


@pytest.fixture(scope="session")
def live_api(settings: Settings) -> Iterator[LiveAPI]:
    api = LiveAPI(settings, API_WORKERS="2")
    yield api
    api.stop()
