"""The command line: python -m app api | worker | maintenance | migrate | keys ...

`dev` and `bench` are tooling, not product: their code lives beside the product in the
repository (devtools/, bench/) and is imported only when they are called, so an installation of
the product alone (the image) answers them with a clear error."""

from __future__ import annotations

import argparse
import gc
import importlib
import logging
import os
import signal
import sys
import uuid
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from sqlalchemy.exc import DBAPIError

from app.domain.errors import JobfleetError, NotFound
from app.domain.principal import Scope
from app.logging import configure_logging
from app.settings import Settings, SettingsError, load_settings

if TYPE_CHECKING:
    from app.services.context import Context

log = logging.getLogger("app.cli")

# name: (module whose main(settings, argv) runs it, summary)
TOOLS = {
    "dev": (
        "devtools.dev",
        "start (or reuse) Postgres and Redis, migrate, make a demo key, run it all",
    ),
    "bench": ("bench.cli", "measure throughput and latency on this machine"),
}
ToolMain = Callable[[Settings, list[str]], int]
# The commands that hash API keys (verify or create them): only they need API_KEY_SECRET.
NEED_KEY_SECRET = {"api", "keys", "dev"}


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


def _migrate(settings: Settings, args: argparse.Namespace) -> int:
    from app.services.jobs import job_defaults
    from app.store import admin

    if args.wait:
        admin.wait_for_server(settings.migration_url, args.wait)
    granted = admin.migrate(
        settings.database_url,
        migration_url=settings.migration_database_url,
        defaults=job_defaults(settings),
    )
    print("migrated", admin.where(settings.migration_url))
    if granted:
        print(f"granted role {granted} the use of the tables")
    return 0


def _seconds(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not 0 <= seconds < float("inf"):
        raise argparse.ArgumentTypeError(f"{value!r} is not a number of seconds (0 or more)")
    return seconds


def _keys(settings: Settings, args: argparse.Namespace) -> int:
    from app.services import auth, connections
    from app.services.context import Context

    ctx = Context(settings, pool=connections.command("keys"))
    try:
        if args.keys_command == "create":
            row, plain = auth.create_key(
                ctx, args.tenant, [auth.Scope(s) for s in args.scope], args.name
            )
            print(f"created key {row.id} for tenant {row.tenant}, scopes {','.join(row.scopes)}")
            print("the key is shown once; keep it now:")
            print(plain)
            return 0
        if args.keys_command == "list":
            for key in auth.list_keys(ctx, args.tenant, include_revoked=args.all):
                state = "revoked" if key.revoked_at else "active"
                used = key.last_used_at.isoformat() if key.last_used_at else "never"
                print(
                    f"{key.id}  {key.tenant}  {','.join(key.scopes)}  {key.name or '-'}  "
                    f"{state}  created {key.created_at.isoformat()}  last used {used}"
                )
            return 0
        return _revoke_keys(ctx, args.key_ids)
    finally:
        ctx.close()


def _revoke_keys(ctx: Context, key_ids: list[uuid.UUID]) -> int:
    """Revoke each key; like `rm a b`, one that cannot be revoked is reported, not the end."""
    from app.services import auth

    status = 0
    for key_id in key_ids:
        try:
            auth.revoke_key(ctx, key_id)
        except NotFound as exc:
            print(f"error: {exc.detail}", file=sys.stderr)
            status = 1
        else:
            print(f"revoked {key_id}")
    return status


def _key_id(value: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{value!r} is not a key id: `keys list` shows them (a UUID)"
        ) from None


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
        parent_pid=_parent_pid(args.stop_with_parent),
        burst=args.burst,
    )
    return manager.run()


def _parent_pid(given: int | None) -> int | None:
    """The pid whose end stops the fleet: the one given, our parent's, or None."""
    if given is None:
        return None
    return given or os.getppid()


def _maintenance(settings: Settings, _: argparse.Namespace) -> int:
    import socket
    import threading

    from app.services import connections
    from app.services.context import Context
    from app.services.maintenance import start_duties

    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    ctx = Context(settings, pool=connections.maintenance())
    holder = f"{settings.fleet_host or socket.gethostname()}:maintenance:{os.getpid()}"
    runners = start_duties(ctx, holder, stop)
    stop.wait()
    for runner in runners:
        runner.thread.join(timeout=30)
    ctx.close()
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m app", description="Jobfleet")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("api", help="run the HTTP API (uvicorn)")
    migrate = commands.add_parser(
        "migrate",
        help="create the database if missing, apply migrations, grant the application's role",
    )
    migrate.add_argument(
        "--wait",
        type=_seconds,
        default=0.0,
        metavar="SECONDS",
        help="keep trying to reach Postgres for up to this long first (it may be starting)",
    )
    worker = commands.add_parser("worker", help="run a WorkerManager and its worker processes")
    worker.add_argument("--processes", type=int, help="worker processes (WORKER_PROCESSES)")
    worker.add_argument("--threads", type=int, help="job loops per process (WORKER_THREADS)")
    worker.add_argument("--queues", help="comma-separated queues to serve (WORKER_QUEUES)")
    worker.add_argument(
        "--stop-with-parent",
        nargs="?",
        type=int,
        const=0,
        metavar="PID",
        help="stop the fleet when the process that started it (the one with this pid, given by "
        "a starter that may die before the fleet is up) exits, however it ended",
    )
    worker.add_argument(
        "--burst",
        action="store_true",
        help="run until the queues have no work left (retries included), then exit 0",
    )
    commands.add_parser(
        "maintenance",
        help=(
            "run only the periodic duties: promoter, recovery, reconciler, retention, stats, "
            "bulk, schedules, and the listener of transactional enqueues"
        ),
    )
    for name, (_, summary) in TOOLS.items():
        # The tool parses its own arguments (main() passes them on), --help included.
        commands.add_parser(name, help=summary, add_help=False)
    keys = commands.add_parser("keys", help="create, list and revoke API keys")
    key_commands = keys.add_subparsers(dest="keys_command", required=True)
    create = key_commands.add_parser(
        "create", help="create a key; it is printed once, alone on the last line"
    )
    create.add_argument(
        "--tenant", required=True, help="the tenant whose jobs the key sees and acts on"
    )
    create.add_argument(
        "--scope",
        action="append",
        required=True,
        choices=[scope.value for scope in Scope],
        help="what the key may do; repeat for several scopes",
    )
    create.add_argument("--name", default="", help="a label that `keys list` shows")
    listing = key_commands.add_parser(
        "list", help="list active keys, oldest first (never the keys themselves)"
    )
    listing.add_argument("--tenant", help="only this tenant's keys")
    listing.add_argument("--all", action="store_true", help="revoked keys too")
    revoke = key_commands.add_parser("revoke", help="revoke keys by their ids")
    revoke.add_argument(
        "key_ids",
        nargs="+",
        type=_key_id,
        metavar="KEY_ID",
        help="the id of a key, as `keys list` shows it; several may be given",
    )
    return parser


COMMANDS: dict[str, Callable[[Settings, argparse.Namespace], int]] = {
    "api": _api,
    "migrate": _migrate,
    "keys": _keys,
    "worker": _worker,
    "maintenance": _maintenance,
}


def _load_tool(name: str) -> ToolMain | None:
    """The tool's main(), or None (said on stderr) when its package is not installed here."""
    module_name = TOOLS[name][0]
    package = module_name.split(".", 1)[0]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name != package:
            raise
        print(
            f"error: `{name}` runs from a checkout of the Jobfleet repository; {package}/ is not "
            "here (an installation of the product, such as the image, holds app/ only)",
            file=sys.stderr,
        )
        return None
    tool: ToolMain = module.main
    return tool


def main(argv: Sequence[str] | None = None) -> int:
    try:
        try:
            return _run(argv)
        finally:
            # Inside the try, so that output a closed pipe refuses fails here, not at exit.
            sys.stdout.flush()
    except BrokenPipeError:
        # The reader went away (`keys list | head`): stop quietly with the status of a program
        # that SIGPIPE ended. Python flushes stdout once more at exit; devnull takes that.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 128 + signal.SIGPIPE


def _run(argv: Sequence[str] | None) -> int:
    parser = _parser()
    args, rest = parser.parse_known_args(argv)  # the rest is a tool's own arguments
    if args.command != "worker":
        # Off while the modules loaded (app/__main__.py); a fleet's manager turns it back on
        # once its first children are forked (app/workers/manager.py).
        gc.enable()
    tool: ToolMain | None = None
    if args.command in TOOLS:
        tool = _load_tool(args.command)
        if tool is None:
            return 2
    elif rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    try:
        settings = load_settings()
        if args.command in NEED_KEY_SECRET:
            settings.require_api_key_secret()
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level)
    try:
        if tool is not None:
            return tool(settings, rest)
        return COMMANDS[args.command](settings, args)
    except JobfleetError as exc:
        print(f"error: {exc.detail}", file=sys.stderr)
        return 1
    except DBAPIError as exc:
        # Unreachable, or refused (a role without the rights it needs): say which server.
        url = settings.migration_url if args.command == "migrate" else settings.database_url
        where = url.rsplit("@", 1)[-1]
        print(f"error: cannot use Postgres at {where}: {exc.orig}".strip(), file=sys.stderr)
        return 1
