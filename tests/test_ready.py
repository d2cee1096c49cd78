"""/health and /ready, with a private Redis that the test really stops and starts."""

from __future__ import annotations

from fastapi.testclient import TestClient

from app.main import create_app
from app.settings import Settings
from devtools.redis_server import PrivateRedis
from tests.helpers import free_port, wait_until


def test_health_needs_nothing(client: TestClient) -> None:
    response = client.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_ready_follows_redis_down_and_back(settings: Settings, private_redis: PrivateRedis) -> None:
    app = create_app(settings.model_copy(update={"redis_url": private_redis.url}))
    with TestClient(app) as client:
        ready = client.get("/ready")
        assert ready.status_code == 200
        assert ready.json()["checks"] == {"postgres": "ok", "redis": "ok"}

        private_redis.stop()
        down = client.get("/ready")
        assert down.status_code == 503
        assert down.headers["content-type"] == "application/problem+json"
        problem = down.json()
        assert problem["detail"] == "unavailable: redis"
        assert problem["checks"]["postgres"] == "ok"
        assert problem["checks"]["redis"].startswith("unavailable")

        private_redis.start()
        wait_until(lambda: client.get("/ready").status_code == 200, timeout=15)


def test_ready_names_postgres_when_it_is_unreachable(settings: Settings) -> None:
    unreachable = settings.database_url.replace(
        settings.database_url.split("@", 1)[1].split("/", 1)[0], f"127.0.0.1:{free_port()}"
    )
    app = create_app(settings.model_copy(update={"database_url": unreachable}))
    with TestClient(app) as client:
        down = client.get("/ready")
    assert down.status_code == 503
    assert down.json()["detail"] == "unavailable: postgres"
