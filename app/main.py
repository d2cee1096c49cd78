"""create_app(): the FastAPI application. `uvicorn app.main:app` also works: the module
builds the app lazily on first access, so importing it opens no connection."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

from app.api import (
    audit,
    bulk,
    dlq,
    docs,
    fleet,
    health,
    jobs,
    lease,
    observability,
    openapi,
    overview,
    problems,
    schedules,
)
from app.api.middleware import BodySizeLimit, InternalErrors, RequestContext
from app.logging import configure_logging
from app.services import connections, limits
from app.services.context import Context
from app.settings import Settings, load_settings
from app.ui import install as install_dashboard
from app.ui.security import SecurityHeaders


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or load_settings()
    configure_logging(settings.log_level)
    # Also checked by `python -m app api` before it starts: any other way of serving the app
    # (uvicorn app.main:app) refuses an unsafe secret here, before the first request.
    settings.require_api_key_secret()
    context = Context(
        settings,
        statement_timeout_ms=settings.api_statement_timeout_ms,
        pool=connections.api(settings),
    )

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        await context.aredis.aclose()
        context.close()

    app = FastAPI(
        title="Jobfleet",
        summary="Submit, track and steer background jobs; Postgres keeps them, Redis dispatches.",
        version="0.1.0",
        lifespan=lifespan,
        docs_url=None,  # served by app.api.docs, without a CDN
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.context = context
    limits.prepare(context)
    problems.install(app)
    app.include_router(health.router)
    app.include_router(observability.router)
    app.include_router(jobs.router)
    app.include_router(dlq.router)
    app.include_router(overview.router)
    app.include_router(fleet.router)
    app.include_router(lease.router)
    app.include_router(bulk.router)
    app.include_router(audit.router)
    app.include_router(schedules.router)
    install_dashboard(app)
    docs.install(app)
    openapi.install(app)
    # Added innermost first: the request id wraps everything, a 500 and a 413 reply included.
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(InternalErrors)
    app.add_middleware(RequestContext)
    # Outermost: the dashboard's security headers reach every /ui reply, a 500 or 413 included.
    app.add_middleware(SecurityHeaders)
    return app


def __getattr__(name: str) -> Any:
    if name == "app":
        return create_app()
    raise AttributeError(name)
