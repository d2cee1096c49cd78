"""The peers in the same run: the harness that runs Celery, Dramatiq, RQ, arq, SAQ and
procrastinate on this machine (`run.sh`, outside this repository), run as a subprocess, and
Jobfleet's figures as ratios to the best peer of each figure.

Absolute figures move by two or three times between machines of one size and between hours of
one day; a ratio to the peers measured on the same machine in the same hour moves far less.
The harness's workloads match Jobfleet's: `w2` is `drain-2x2` (jobs already queued, then 4
execution slots start: jobs/s steady and including the start-up) and `w3` is `pickup` (200
jobs/s; the time from just before the enqueue call to the task's start)."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
HARNESS_VARIABLE = "JOBFLEET_PEERS_HARNESS"
DEFAULT_HARNESS = ROOT.parent / "shared" / "bench-peers" / "run.sh"
# The harness's labels of the peers closest to Jobfleet's figures on this kind of machine.
BEST_PEERS = ("saq", "dramatiq", "celery-prefork")


def harness_path(given: str | None) -> Path:
    """--peers-harness, else $JOBFLEET_PEERS_HARNESS, else ../shared/bench-peers/run.sh."""
    return Path(given or os.environ.get(HARNESS_VARIABLE) or DEFAULT_HARNESS)


def missing_harness(path: Path) -> str | None:
    """Why the peers cannot run (said, then skipped), or None when the harness is there."""
    if path.is_file() and os.access(path, os.X_OK):
        return None
    return (
        f"peers skipped: no harness at {path} (it lives outside this repository; name it with "
        f"--peers-harness or {HARNESS_VARIABLE})"
    )


@dataclass(frozen=True)
class Peer:
    """A peer's medians over its runs, from the harness's `peers.<label>` (None: not measured)."""

    label: str
    drain: float | None  # w2: jobs/s, first completion to last
    drain_total: float | None  # w2_total: jobs/s, worker launch to last completion
    startup_seconds: float | None  # worker launch to first completion
    pickup_p50_ms: float | None
    pickup_p99_ms: float | None


def _median(values: Sequence[Any]) -> float | None:
    present = [float(value) for value in values if value is not None]
    return statistics.median(present) if present else None


def read_peers(documents: Sequence[Mapping[str, Any]]) -> list[Peer]:
    """The peers of one or more harness JSON documents (one per round of an interleaved run):
    each figure the median over every run of every document, as the harness's own summary
    takes it over one document's runs (a pickup run that timed out or failed left out)."""
    drains: dict[str, list[dict[str, Any]]] = {}
    pickups: dict[str, list[dict[str, Any]]] = {}
    for document in documents:
        for label, measured in document.get("peers", {}).items():
            runs = measured.get("runs", {})
            drains.setdefault(label, []).extend(runs.get("w2", []))
            pickups.setdefault(label, []).extend(
                run for run in runs.get("w3", [])
                if "p50" in run and not run.get("timeout") and not run.get("error")
            )  # fmt: skip
    return [
        Peer(
            label=label,
            drain=_median([run.get("rate") for run in drains[label]]),
            drain_total=_median([run.get("rate_total") for run in drains[label]]),
            startup_seconds=_median([run.get("startup_s") for run in drains[label]]),
            pickup_p50_ms=_median([run.get("p50") for run in pickups[label]]),
            pickup_p99_ms=_median([run.get("p99") for run in pickups[label]]),
        )
        for label in drains
    ]


def run_harness(
    harness: Path, labels: Sequence[str], repeats: int, drain_jobs: int, pickup_jobs: int,
    pickup_rate: float,
) -> dict[str, Any]:  # fmt: skip
    """Run the peers' drain and pickup (`--workloads w2,w3`) with Jobfleet's sizes and return
    the harness's JSON. Its progress goes to our stdout as it comes; its raw logs to a
    temporary folder."""
    with tempfile.TemporaryDirectory(prefix="jobfleet-peers-") as scratch:
        out = Path(scratch) / "peers.json"
        command = [
            str(harness), "--only", ",".join(labels), "--workloads", "w2,w3",
            "--repeats", str(repeats), "--no-limits", "--out", str(out),
            "--n", str(drain_jobs), "--lat-n", str(pickup_jobs), "--lat-rate", str(pickup_rate),
        ]  # fmt: skip
        # PEERS_OUT: the harness writes its raw logs there, never into this repository.
        env = {**os.environ, "PEERS_OUT": scratch}
        done = subprocess.run(command, env=env, check=False)
        if done.returncode != 0 or not out.exists():
            raise RuntimeError(f"the peers' harness failed (exit {done.returncode})")
        document: dict[str, Any] = json.loads(out.read_text())
        return document


@dataclass(frozen=True)
class Ratio:
    """Jobfleet's figure against the best peer's (the highest rate, or the lowest time)."""

    figure: str
    unit: str
    jobfleet: float | None
    best_peer: str | None
    peer: float | None
    ratio: float | None  # Jobfleet / best peer
    target: str  # what the ratio should be, in words


@dataclass(frozen=True)
class _Figure:
    name: str
    unit: str
    jobfleet: tuple[str, str]  # workload, figure of the Jobfleet report
    peer: Callable[[Peer], float | None]
    higher_is_better: bool
    target: str


FIGURES = (
    _Figure("drain including the fleet's start-up", "jobs/s",
            ("drain-2x2", "jobs_per_second_total"), lambda p: p.drain_total, True, ">= 3x"),
    _Figure("steady drain", "jobs/s",
            ("drain-2x2", "jobs_per_second"), lambda p: p.drain, True, ">= 4x"),
    _Figure("pickup p99 at 200/s, send to task start", "ms",
            ("pickup", "p99_ms"), lambda p: p.pickup_p99_ms, False, "<= 1.5x"),
    _Figure("pickup p50 at 200/s, send to task start", "ms",
            ("pickup", "p50_ms"), lambda p: p.pickup_p50_ms, False, "-"),
    _Figure("fleet start to first claim", "s",
            ("drain-2x2", "startup_seconds"), lambda p: None, False, "< 0.5 s"),
    _Figure("fleet start to first finish", "s",
            ("drain-2x2", "first_finish_seconds"), lambda p: p.startup_seconds, False, "-"),
)  # fmt: skip


def _jobfleet_median(
    results: Mapping[str, list[dict[str, float]]], key: tuple[str, str]
) -> float | None:
    workload, figure = key
    values = [run[figure] for run in results.get(workload, []) if figure in run]
    return statistics.median(values) if values else None


def ratios(results: Mapping[str, list[dict[str, float]]], peers: Sequence[Peer]) -> list[Ratio]:
    """Each figure's Jobfleet median (over its runs) against the best peer's median."""
    out = []
    for figure in FIGURES:
        ours = _jobfleet_median(results, figure.jobfleet)
        theirs = [(value, peer.label) for peer in peers if (value := figure.peer(peer)) is not None]
        best = (max if figure.higher_is_better else min)(theirs, default=None)
        ratio = None
        if ours is not None and best is not None and best[0] > 0:
            ratio = ours / best[0]
        out.append(
            Ratio(
                figure.name,
                figure.unit,
                ours,
                best[1] if best else None,
                best[0] if best else None,
                ratio,
                figure.target,
            )
        )
    return out


def _shown(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:,.2f}" if abs(value) < 10 else f"{value:,.0f}"


def ratio_table(rows: Sequence[Ratio]) -> str:
    lines = [f"{'figure':<54}{'unit':<8}{'Jobfleet':>10}{'best peer':>26}{'ratio':>9}  target"]
    for row in rows:
        peer = f"{row.best_peer} {_shown(row.peer)}" if row.best_peer else "-"
        ratio = f"{row.ratio:.2f}x" if row.ratio is not None else "-"
        lines.append(
            f"{row.figure:<54}{row.unit:<8}{_shown(row.jobfleet):>10}{peer:>26}{ratio:>9}  "
            f"{row.target}"
        )
    return "\n".join(lines)


def as_json(rows: Sequence[Ratio]) -> list[dict[str, Any]]:
    return [asdict(row) for row in rows]
