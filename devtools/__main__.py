"""python -m devtools ensure | stop: private Postgres and Redis for the shell scripts.

    python -m devtools ensure --env-file .local/test-services.env [--fast]
                              [--local-dir .local] [--dotenv .env]
    python -m devtools stop [--local-dir .local]

`ensure` uses DATABASE_URL and REDIS_URL (from the environment, else the `.env` file, else the
settings' defaults) when they answer and starts private servers otherwise; it writes
`export DATABASE_URL=...` and `export REDIS_URL=...` for a shell to `source`, and records what
it started. `stop` stops exactly those. `--fast` trades durability for speed, for tests.
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
from pathlib import Path

from app.settings import SettingsError, load_settings
from devtools.server import ServerError
from devtools.services import ensure_services, record_started, stop_recorded

log = logging.getLogger("devtools")


def _ensure(env_file: Path, local_dir: Path, dotenv: Path, fast: bool) -> None:
    # The settings read the environment and the .env file, as the app will.
    settings = load_settings(_env_file=dotenv)
    database_url, redis_url, started = ensure_services(
        settings.database_url, settings.redis_url, local_dir, fast=fast
    )
    record_started(local_dir, started)
    env_file.parent.mkdir(parents=True, exist_ok=True)
    env_file.write_text(
        f"export DATABASE_URL={shlex.quote(database_url)}\n"
        f"export REDIS_URL={shlex.quote(redis_url)}\n"
    )
    log.info("wrote %s", env_file)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m devtools", description="Private Postgres and Redis under .local/."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    ensure = commands.add_parser(
        "ensure", help="use DATABASE_URL/REDIS_URL if they answer, else start private servers"
    )
    ensure.add_argument("--env-file", type=Path, required=True, help="where to write the exports")
    ensure.add_argument("--local-dir", type=Path, default=Path(".local"))
    ensure.add_argument("--dotenv", type=Path, default=Path(".env"), help="read when env is unset")
    ensure.add_argument("--fast", action="store_true", help="fsync=off etc. (throwaway data)")
    stop = commands.add_parser("stop", help="stop the private servers `ensure` started")
    stop.add_argument("--local-dir", type=Path, default=Path(".local"))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="devtools: %(message)s", stream=sys.stderr)
    try:
        if args.command == "ensure":
            _ensure(args.env_file, args.local_dir, args.dotenv, args.fast)
        else:
            stop_recorded(args.local_dir)
    except (ServerError, SettingsError) as error:
        log.error("%s", error)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
