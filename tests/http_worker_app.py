"""An application's HTTP worker, as the tests run it: a process of its own that imports only the
client package (never app/), takes its settings from the environment and its worker id from its
argument, and prints one line when it has stopped.

    JOBFLEET_URL, JOBFLEET_KEY   the API and a worker key
    WORKER_QUEUES                queues, comma separated
    WORKER_CONCURRENCY           threads (default 4)
    LEASE_SECONDS, WAIT_SECONDS  the lease and the long poll (default 30 and 1)
"""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

from jobfleet import Client
from jobfleet.worker import JobContext, Worker


def build(worker_id: str, client: Client) -> Worker:
    worker = Worker(
        client,
        queues=os.environ["WORKER_QUEUES"].split(","),
        concurrency=int(os.environ.get("WORKER_CONCURRENCY", "4")),
        worker_id=worker_id,
        lease_seconds=float(os.environ.get("LEASE_SECONDS", "30")),
        wait_seconds=float(os.environ.get("WAIT_SECONDS", "1")),
    )

    @worker.task("echo")
    def echo(payload: Any) -> Any:
        return payload

    @worker.task("hold")
    def hold(payload: dict[str, Any], job: JobContext) -> dict[str, Any]:
        """Runs `seconds` on its first attempt (`then` on later ones), until the file `until`
        exists, or until told to stop."""
        seconds = payload.get("seconds", 0) if job.attempt == 1 else payload.get("then", 0)
        deadline = time.monotonic() + seconds
        until = payload.get("until")
        while time.monotonic() < deadline and not job.cancelled:
            if until and Path(until).exists():
                break
            time.sleep(0.02)
        return {"attempt": job.attempt, "worker": worker.worker_id, "cancelled": job.cancelled}

    @worker.task("boom")
    def boom(payload: dict[str, Any]) -> None:
        raise RuntimeError(payload.get("message", "boom"))

    return worker


def main() -> int:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    # The worker's start, stop and lost leases, which the tests read.
    logging.getLogger("jobfleet.worker").setLevel(logging.INFO)
    with Client(os.environ["JOBFLEET_URL"], os.environ["JOBFLEET_KEY"]) as client:
        stats = build(sys.argv[1], client).run()
    print(f"stopped {stats.leased} {stats.completed} {stats.failed} {stats.dropped}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
