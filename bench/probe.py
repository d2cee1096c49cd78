"""The benchmark's own task, which its fleets load (`TASK_MODULES=bench.probe`): it returns
the time it started running, by this machine's clock, so that pickup is measured as the peers
measure it, from the client's clock just before the submit to the task's start."""

from __future__ import annotations

import time
from typing import Any

from app.workers.registry import task


@task("bench.started")
def started(payload: Any) -> dict[str, float]:
    return {"started": time.time()}
