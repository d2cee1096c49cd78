"""The command line: python -m app api | dev | migrate | keys ... (and the fleet's commands)."""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

from sqlalchemy.exc import OperationalError

from app.domain.errors import JobfleetError
from app.domain.principal import Scope
from app.logging import configure_logging
from app.settings import Settings, SettingsError, load_settings

log = logging.getLogger("app.cli")


def _api(settings: Settings, _: argparse.Namespace) -> int:
    from app.metrics import prepare_multiprocess_dir

    # Before uvicorn imports the app: every API worker process counts into this directory.
    prepare_multiprocess_dir(settings.metrics_dir, "api")
    from app.api.metrics_port import open_metrics_port
    from app.api.serve import serve

    # One metrics port per API, in this process: it merges every worker process's files.
    metrics_port = open_metrics_port(settings)
    try:
        serve(settings.api_host, settings.api_port, settings.api_workers)
    finally:
        if metrics_port is not None:
            metrics_port.close()
    return 0


def _migrate(settings: Settings, _: argparse.Namespace) -> int:
    from app.store.admin import migrate

    migrate(settings.database_url)
    print("migrated", settings.database_url.rsplit("@", 1)[-1])
    return 0


def _keys(settings: Settings, args: argparse.Namespace) -> int:
    from app.services import auth
    from app.services.context import Context

    ctx = Context(settings)
    try:
        if args.keys_command == "create":
            row, plain = auth.create_key(
                ctx, args.tenant, [auth.Scope(s) for s in args.scope], args.name
            )
            print(f"created key {row.id} for tenant {row.tenant}, scopes {','.join(row.scopes)}")
            print("the key is shown once; keep it now:")
            print(plain)
        elif args.keys_command == "list":
            for key in auth.list_keys(ctx, args.tenant):
                state = "revoked" if key.revoked_at else "active"
                used = key.last_used_at.isoformat() if key.last_used_at else "never"
                print(
                    f"{key.id}  {key.tenant}  {','.join(key.scopes)}  {key.name or '-'}  "
                    f"{state}  created {key.created_at.isoformat()}  last used {used}"
                )
        else:
            auth.revoke_key(ctx, uuid.UUID(args.key_id))
            print(f"revoked {args.key_id}")
    finally:
        ctx.close()
    return 0


def _demo_key(settings: Settings, local_dir: Path) -> str:
    """Reuse the demo key of an earlier run while it is valid, so the tour's key stays put."""
    from app.domain.errors import Unauthorized
    from app.services import auth
    from app.services.context import Context

    saved = local_dir / "demo-key"
    ctx = Context(settings)
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


def _start_fleet(environment: dict[str, str]) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "app", "worker", "--stop-with-parent"]
    return subprocess.Popen(command, env=environment)


def _stop_fleet(fleet: subprocess.Popen[bytes], grace: float) -> None:
    if fleet.poll() is None:
        fleet.terminate()
    try:
        fleet.wait(timeout=grace + 10)
    except subprocess.TimeoutExpired:
        fleet.kill()
        fleet.wait()


def _dev(settings: Settings, args: argparse.Namespace) -> int:
    import uvicorn

    from app.api.metrics_port import MetricsPort, open_metrics_port
    from app.devstack import ensure_services
    from app.main import create_app
    from app.store.admin import migrate

    local_dir = Path(args.local_dir)
    database_url, redis_url, started = ensure_services(
        settings.database_url, settings.redis_url, local_dir
    )
    fleet: subprocess.Popen[bytes] | None = None
    metrics_port: MetricsPort | None = None
    try:
        settings = settings.model_copy(
            update={"database_url": database_url, "redis_url": redis_url}
        )
        os.environ.update(DATABASE_URL=database_url, REDIS_URL=redis_url)
        migrate(database_url)
        key = _demo_key(settings, local_dir)
        fleet = _start_fleet(dict(os.environ))
        metrics_port = open_metrics_port(settings)
        base = f"http://{settings.api_host}:{settings.api_port}"
        metrics_url = (
            f"http://{settings.api_metrics_host}:{metrics_port.port}/metrics (no key)"
            if metrics_port
            else f"{base}/metrics (with a metrics or admin key)"
        )
        print(
            f"\nJobfleet is starting.\n"
            f"  API        {base}\n  API docs   {base}/docs\n  metrics    {metrics_url}\n"
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
    finally:
        if metrics_port is not None:
            metrics_port.close()
        if fleet is not None:
            _stop_fleet(fleet, settings.shutdown_grace_seconds)
        for service in reversed(started):
            service.stop()  # type: ignore[attr-defined]
    return 0


def _worker(settings: Settings, args: argparse.Namespace) -> int:
    processes = settings.worker_processes if args.processes is None else args.processes
    if args.burst and processes < 1:
        print("error: a burst run needs at least one worker process", file=sys.stderr)
        return 2
    from app.metrics import prepare_multiprocess_dir

    # Before any metric exists: the manager and its children count into this directory.
    prepare_multiprocess_dir(settings.metrics_dir, "worker")
    from app.workers.manager import WorkerManager
    from app.workers.process import default_host

    queues = [q.strip() for q in args.queues.split(",") if q.strip()] if args.queues else None
    manager = WorkerManager(
        settings,
        host=default_host(settings),
        processes=processes,
        threads=args.threads or settings.worker_threads,
        queues=queues or settings.queues,
        stop_with_parent=args.stop_with_parent,
        burst=args.burst,
    )
    return manager.run()


def _maintenance(settings: Settings, _: argparse.Namespace) -> int:
    import signal
    import socket
    import threading

    from app.services.context import Context
    from app.services.maintenance import start_duties

    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    ctx = Context(settings)
    holder = f"{settings.fleet_host or socket.gethostname()}:maintenance:{os.getpid()}"
    runners = start_duties(ctx, holder, stop)
    stop.wait()
    for runner in runners:
        runner.thread.join(timeout=30)
    ctx.close()
    return 0


def _bench(settings: Settings, args: argparse.Namespace) -> int:
    from app import bench
    from app.devstack import ensure_services

    database_url, redis_url, started = ensure_services(
        settings.database_url, settings.redis_url, Path(args.local_dir)
    )
    try:
        settings = settings.model_copy(
            update={"database_url": database_url, "redis_url": redis_url}
        )
        only = [w.strip() for w in args.only.split(",")] if args.only else []
        return bench.run(settings, args.runs, args.quick, only, args.api_workers, Path(args.out))
    finally:
        for service in reversed(started):
            service.stop()  # type: ignore[attr-defined]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m app", description="Jobfleet")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("api", help="run the HTTP API (uvicorn)")
    commands.add_parser("migrate", help="create the database if missing and apply migrations")
    dev = commands.add_parser(
        "dev",
        help="start (or reuse) Postgres and Redis, migrate, make a demo key, run it all",
    )
    dev.add_argument("--local-dir", default=".local", help="private servers and the demo key")
    worker = commands.add_parser("worker", help="run a WorkerManager and its worker processes")
    worker.add_argument("--processes", type=int, help="worker processes (WORKER_PROCESSES)")
    worker.add_argument("--threads", type=int, help="job loops per process (WORKER_THREADS)")
    worker.add_argument("--queues", help="comma-separated queues to serve (WORKER_QUEUES)")
    worker.add_argument(
        "--stop-with-parent",
        action="store_true",
        help="stop the fleet when the process that started it exits, however it ended",
    )
    worker.add_argument(
        "--burst",
        action="store_true",
        help="run until the queues have no work left (retries included), then exit 0",
    )
    commands.add_parser(
        "maintenance",
        help="run only the periodic duties: promoter, recovery, reconciler, retention",
    )
    bench = commands.add_parser("bench", help="measure throughput and latency on this machine")
    bench.add_argument("--runs", type=int, default=3, help="runs of each workload")
    bench.add_argument("--quick", action="store_true", help="small sizes: a check that it runs")
    bench.add_argument("--only", help="comma-separated workloads (default: all)")
    bench.add_argument("--api-workers", type=int, default=2, help="uvicorn workers of the API")
    bench.add_argument("--local-dir", default=".local", help="private servers, if needed")
    bench.add_argument("--out", default="bench-results", help="folder for the JSON results")
    keys = commands.add_parser("keys", help="create, list and revoke API keys")
    key_commands = keys.add_subparsers(dest="keys_command", required=True)
    create = key_commands.add_parser("create", help="create a key; it is printed once")
    create.add_argument("--tenant", required=True)
    create.add_argument(
        "--scope",
        action="append",
        required=True,
        choices=[scope.value for scope in Scope],
        help="repeat for several scopes",
    )
    create.add_argument("--name", default="")
    listing = key_commands.add_parser("list", help="list keys (never the keys themselves)")
    listing.add_argument("--tenant")
    revoke = key_commands.add_parser("revoke", help="revoke a key by its id")
    revoke.add_argument("key_id")
    return parser


COMMANDS: dict[str, Callable[[Settings, argparse.Namespace], int]] = {
    "api": _api,
    "migrate": _migrate,
    "keys": _keys,
    "dev": _dev,
    "worker": _worker,
    "maintenance": _maintenance,
    "bench": _bench,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level)
    try:
        return COMMANDS[args.command](settings, args)
    except JobfleetError as exc:
        print(f"error: {exc.detail}", file=sys.stderr)
        return 1
    except OperationalError as exc:
        where = settings.database_url.rsplit("@", 1)[-1]
        print(f"error: cannot use Postgres at {where}: {exc.orig}".strip(), file=sys.stderr)
        return 1
