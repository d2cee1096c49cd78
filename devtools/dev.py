"""python -m app dev: the whole stack on one machine, in the foreground.

Postgres and Redis (the configured ones, or private ones started under `--local-dir`), the
migrations, a demo key with every scope, the fleet (`python -m app worker`) and the API, served
from this process. Whatever ends it, it stops what it started: on Ctrl-C (SIGINT), SIGTERM
(what a process manager, a container runtime or a CI timeout sends) and SIGHUP (the terminal
went away) alike. The fleet runs in a process group of its own, so a signal meant for this
process does not reach it half-way, and with `--stop-with-parent`, so it stops by itself when
this process is killed outright (SIGKILL), which no handler can catch.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from app.settings import Settings
from devtools.processes import settings_env, start_app, terminate
from devtools.services import ensure_services

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def main(settings: Settings, argv: Sequence[str]) -> int:
    args = _parser().parse_args(argv)
    _end_like_ctrl_c()
    started = contextlib.ExitStack()
    try:
        _run(settings, Path(args.local_dir), started)
    except KeyboardInterrupt:
        pass
    finally:
        # Stopping takes up to the fleet's grace period: a second signal must not cut it short
        # and leave the rest running.
        for signum in STOP_SIGNALS:
            signal.signal(signum, signal.SIG_IGN)
        started.close()
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m app dev",
        description="Start (or reuse) Postgres and Redis, migrate, make a demo key, and run the "
        "API and the fleet until Ctrl-C, SIGTERM or SIGHUP.",
    )
    parser.add_argument("--local-dir", default=".local", help="private servers and the demo key")
    return parser


def _end_like_ctrl_c() -> None:
    """SIGTERM and SIGHUP end this process as Ctrl-C does: a KeyboardInterrupt, whose way out
    runs every clean-up. While uvicorn serves, it handles SIGINT and SIGTERM itself (a graceful
    stop, then the signal again, which lands here); SIGHUP then goes through its handler."""
    signal.signal(signal.SIGTERM, signal.default_int_handler)

    def hang_up(_: int, frame: FrameType | None) -> None:
        handler = signal.getsignal(signal.SIGTERM)
        if callable(handler):
            handler(signal.SIGTERM, frame)

    signal.signal(signal.SIGHUP, hang_up)


def _run(settings: Settings, local_dir: Path, started: contextlib.ExitStack) -> None:
    import uvicorn

    from app.api.metrics_port import open_metrics_port
    from app.main import create_app
    from app.services.jobs import job_defaults
    from app.store.admin import migrate

    database_url, redis_url, servers = ensure_services(
        settings.database_url, settings.redis_url, local_dir
    )
    for server in servers:
        started.callback(server.stop)
    settings = settings.model_copy(update={"database_url": database_url, "redis_url": redis_url})
    migrate(database_url, defaults=job_defaults(settings))
    key = _demo_key(settings, local_dir)
    # Our pid, not the fleet's view of its parent: if we die before it is up, it stops at once.
    command = ["worker", "--stop-with-parent", str(os.getpid())]
    fleet = start_app(command, settings_env(settings), process_group=0)
    started.callback(terminate, fleet, settings.shutdown_grace_seconds + 10)
    metrics_port = open_metrics_port(settings)
    if metrics_port is not None:
        started.callback(metrics_port.close)
    base = f"http://{settings.api_host}:{settings.api_port}"
    metrics_url = (
        f"http://{settings.api_metrics_host}:{metrics_port.port}/metrics (no key)"
        if metrics_port
        else f"{base}/metrics (with a metrics or admin key)"
    )
    print(
        f"\nJobfleet is starting.\n"
        f"  API        {base}\n  API docs   {base}/docs\n"
        f"  dashboard  {base}/ui/ (sign in with the demo key below)\n"
        f"  metrics    {metrics_url}\n"
        f"  fleet      {settings.worker_processes} processes x {settings.worker_threads} "
        f"threads on queues {settings.worker_queues}\n"
        f"  Postgres   {database_url.rsplit('@', 1)[-1]}\n  Redis      {redis_url}\n"
        f"  demo key   {key}\n\n"
        f"  export JOBFLEET_KEY={key}\n"
        f'  curl -s -H "Authorization: Bearer $JOBFLEET_KEY" {base}/jobs\n'
        f"Ctrl-C stops everything.\n",
        flush=True,
    )
    uvicorn.run(
        create_app(settings),
        host=settings.api_host,
        port=settings.api_port,
        log_config=None,
        access_log=False,
    )


def _demo_key(settings: Settings, local_dir: Path) -> str:
    """Reuse the demo key of an earlier run while it is valid, so the tour's key stays put."""
    from app.domain.errors import Unauthorized
    from app.services import auth, connections
    from app.services.context import Context

    saved = local_dir / "demo-key"
    ctx = Context(settings, pool=connections.command("dev"))
    try:
        if saved.exists():
            try:
                auth.authenticate(ctx, f"Bearer {saved.read_text().strip()}")
                return saved.read_text().strip()
            except Unauthorized:
                pass
        _, plain = auth.create_key(ctx, "demo", list(auth.Scope), "demo")
        local_dir.mkdir(parents=True, exist_ok=True)
        saved.write_text(plain + "\n")
        return plain
    finally:
        ctx.close()
