"""Schemathesis against a live API and its own OpenAPI document, every operation: the API
never answers 5xx, and never answers what its document does not describe (status code,
content type, headers, body schema, Allow of a 405), nor serves a keyed route without a key.

Two passes with a fixed seed and a bounded number of cases per operation: an admin key, which
reaches every operation, then a producer key (random cases only), whose admin and worker calls
must be 403s the document describes. Schemathesis' own summary is shown at the end of the run.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.helpers import HEAVY, ROOT, SUMMARY, LiveAPI

pytestmark = [pytest.mark.live, HEAVY]

CHECKS = [
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
    "allow_header_conformance",
    "ignored_auth",
]
SEED = "20260101"


def fuzz(url: str, key: str, examples: int, phases: str, workdir: Path) -> tuple[int, str]:
    command = [
        sys.executable, "-m", "schemathesis.cli", "run", f"{url}/openapi.json",
        "--checks", ",".join(CHECKS),
        "--phases", phases,
        "--seed", SEED,
        "--max-examples", str(examples),
        "--generation-database", "none",
        # One worker: the same order of calls every run; and with two, hypothesis' threads
        # trip over CPython 3.11's ast.parse, which is not thread-safe.
        "--workers", "1",
        "--request-timeout", "15",
        "--header", f"Authorization: Bearer {key}",
        "--no-color",
    ]  # fmt: skip
    # The hooks shorten the lease long-poll (see tests/fuzz_hooks.py). A fresh working folder:
    # schemathesis keeps a cache of past crashes there, which would make runs depend on history.
    # Without coverage's variables: the fuzzer runs none of the product's code (the API it
    # calls is measured), and traced it needed about twice the CPU.
    env = {name: value for name, value in os.environ.items() if not name.startswith("COVERAGE_")}
    env |= {"SCHEMATHESIS_HOOKS": "tests.fuzz_hooks", "PYTHONPATH": str(ROOT)}
    run = subprocess.run(command, cwd=workdir, env=env, capture_output=True, text=True, timeout=400)
    return run.returncode, run.stdout + run.stderr


def summary(output: str) -> str:
    """Schemathesis' SUMMARY section: operations, phases, cases, seed."""
    start = output.rfind("SUMMARY")
    return output[output.rfind("\n", 0, start) + 1 :] if start >= 0 else output[-3000:]


@pytest.mark.timeout(600)
def test_no_operation_answers_5xx_or_off_its_document(
    live_api: LiveAPI,
    make_key: Callable[..., str],
    request: pytest.FixtureRequest,
    tmp_path: Path,
) -> None:
    # The producer pass checks what a lesser key gets: the admin pass has already sent every
    # operation its coverage cases (which ignore --max-examples and were two thirds of this
    # pass's calls), so random cases are enough to reach each operation's 403 or its reply.
    passes = [
        ("admin", make_key("fuzz", "admin"), 12, "examples,coverage,fuzzing,stateful"),
        ("producer", make_key("fuzz", "producer"), 15, "fuzzing"),
    ]
    for name, key, examples, phases in passes:
        (tmp_path / name).mkdir()
        started = time.monotonic()
        status, output = fuzz(live_api.url, key, examples, phases, tmp_path / name)
        request.node.add_report_section(
            "call",
            f"{SUMMARY}schemathesis, {name} key, {time.monotonic() - started:.0f} s",
            summary(output),
        )
        assert status == 0, output[-30000:]
