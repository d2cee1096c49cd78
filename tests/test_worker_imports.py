"""What a fleet's manager loads before it forks its first children, which is what they start
with: the job path's modules, the Postgres dialect and driver, and none of the modules only
the duties, the API or later steps use (docs/DECISIONS.md 93 and 96)."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.helpers import ROOT

# What `python -m app worker` imports up to its fork (app/cli.py's _worker), then the Database
# its manager makes first; prints which of the named modules are loaded.
PROBE = """
import json, sys
import app.cli
from app.settings import load_settings
from app.store.engine import Database
from app.workers.manager import WorkerManager
from app.workers.process import default_host
Database(load_settings())
print(json.dumps(sorted(m for m in sys.modules if m in set(sys.argv[1:]))))
"""
NOT_BEFORE_FORK = [
    "sqlalchemy.orm",  # the job path runs on Core connections
    "app.services.maintenance",  # the duties: the manager loads them after the first claims
    "app.store.models",
    "prometheus_client",  # the metrics: at their first use
    "slowapi",  # the API's rate limiter
    "httpx",  # the `http` task's client
]
BEFORE_FORK = ["sqlalchemy.dialects.postgresql.psycopg2", "psycopg2"]


def test_the_manager_forks_with_the_job_path_loaded_and_nothing_else() -> None:
    loaded = json.loads(
        subprocess.run(
            [sys.executable, "-c", PROBE, *NOT_BEFORE_FORK, *BEFORE_FORK],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    assert sorted(BEFORE_FORK) == [m for m in loaded if m in BEFORE_FORK]
    assert not [m for m in loaded if m in NOT_BEFORE_FORK]
