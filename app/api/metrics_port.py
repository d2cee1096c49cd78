"""The API's metrics port: the same text as GET /metrics, without a key, on an address of its
own (API_METRICS_HOST:API_METRICS_PORT) that only the operator's network should reach, as the
fleet manager serves its own.

`python -m app api` opens it once, in the process that runs uvicorn or supervises its
workers: the merged files of every worker process, plus the scrape-time gauges computed from a
Context of this process's own.
"""

from __future__ import annotations

import logging
from wsgiref.simple_server import WSGIServer

from app.metrics import metrics
from app.services import connections
from app.services.context import Context
from app.services.gauges import FleetGauges
from app.settings import Settings

log = logging.getLogger(__name__)


class MetricsPort:
    def __init__(self, server: WSGIServer, ctx: Context) -> None:
        self._server = server
        self._ctx = ctx
        self.port = int(server.server_address[1])

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._ctx.close()


def open_metrics_port(settings: Settings) -> MetricsPort | None:
    """Serve the exposition on its port in a background thread; None when the port is off
    (0) or taken (logged: the API still runs, but Prometheus cannot scrape it there)."""
    port = settings.api_metrics_port
    if not port:
        return None
    from prometheus_client import start_http_server

    ctx = Context(settings, pool=connections.api_metrics())  # connects on the first scrape
    registry = metrics().scrape_registry([FleetGauges(ctx)])
    try:
        server, _ = start_http_server(port, addr=settings.api_metrics_host, registry=registry)
    except OSError as exc:
        log.warning("API metrics port unavailable", extra={"port": port, "error": str(exc)})
        ctx.close()
        return None
    return MetricsPort(server, ctx)
