"""python -m app bench [--runs N] [--quick] [--only a,b] [--api-workers N] [--out DIR]
[--peers saq,dramatiq,celery-prefork [--peers-harness PATH] [--peers-runs N]]
[--defaults-rate R]."""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.settings import Settings
from bench import machine, peers
from bench.report import Report
from bench.stack import Stack
from bench.workloads import ON_REQUEST, QUICK, WORKLOADS, Sizes
from devtools.services import ensure_services


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m app bench", description="Measure throughput and latency on this machine."
    )
    parser.add_argument("--runs", type=int, default=3, help="runs of each workload")
    parser.add_argument("--quick", action="store_true", help="small sizes: a check that it runs")
    parser.add_argument(
        "--only",
        help=f"comma-separated workloads (default: all but {', '.join(ON_REQUEST)}): "
        f"{', '.join(WORKLOADS)}",
    )
    parser.add_argument("--api-workers", type=int, default=2, help="uvicorn workers of the API")
    parser.add_argument("--local-dir", default=".local", help="private servers, if needed")
    parser.add_argument("--out", default="bench-results", help="folder for the JSON results")
    parser.add_argument(
        "--peers",
        help="comma-separated peers whose drain and pickup run in the same run, a run of each "
        f"after each round of Jobfleet's workloads (e.g. {','.join(peers.BEST_PEERS)}); "
        "Jobfleet's figures are then printed as ratios to the best of them",
    )
    parser.add_argument(
        "--peers-harness",
        help=f"the peers' run.sh (default: ${peers.HARNESS_VARIABLE}, else "
        "../shared/bench-peers/run.sh beside this repository)",
    )
    parser.add_argument("--peers-runs", type=int, help="runs of each peer (default: --runs)")
    parser.add_argument(
        "--defaults-rate",
        type=float,
        help="submits per second k6 offers in the `defaults` workload (default: 1000)",
    )
    return parser


def main(settings: Settings, argv: Sequence[str]) -> int:
    args = _parser().parse_args(argv)
    only = [name.strip() for name in args.only.split(",")] if args.only else []
    unknown = set(only) - set(WORKLOADS)
    if unknown:
        _parser().error(f"unknown workloads: {', '.join(sorted(unknown))}")
    labels = (
        [label.strip() for label in args.peers.split(",") if label.strip()] if args.peers else []
    )
    harness = peers.harness_path(args.peers_harness)
    if labels and (why := peers.missing_harness(harness)):
        print(why, flush=True)
        labels = []
    database_url, redis_url, started = ensure_services(
        settings.database_url, settings.redis_url, Path(args.local_dir)
    )
    try:
        settings = settings.model_copy(
            update={"database_url": database_url, "redis_url": redis_url}
        )
        chosen = [
            name for name in WORKLOADS if name in only or (not only and name not in ON_REQUEST)
        ]
        plan = Plan(
            chosen, args.runs, args.quick, args.api_workers, Path(args.out), args.defaults_rate
        )
        run(settings, plan, labels, harness, args.peers_runs or args.runs)
    finally:
        for server in reversed(started):
            server.stop()
    return 0


@dataclass(frozen=True)
class Plan:
    chosen: list[str]  # workloads, in the order of WORKLOADS
    runs: int
    quick: bool
    api_workers: int
    out: Path  # the folder of the JSON results
    defaults_rate: float | None = None  # the `defaults` workload's offered rate, if not its own


def run(
    settings: Settings,
    plan: Plan,
    labels: Sequence[str] = (),
    harness: Path | None = None,
    peer_runs: int = 3,
) -> None:
    """Rounds of each chosen workload, each run on a fresh database, then one run of each peer
    (if any): the peers' runs interleave with Jobfleet's, so that a change in the machine's load
    during the run falls on both. Print and write."""
    sizes = QUICK if plan.quick else Sizes()
    if plan.defaults_rate:
        sizes = dataclasses.replace(sizes, defaults_rate=plan.defaults_rate)
    about = machine.describe(settings.database_url, settings.redis_url)
    about["load_average_start"] = machine.load_average()
    stack = Stack(settings, plan.api_workers)
    report = Report()
    documents: list[dict[str, Any]] = []
    try:
        for round_ in range(max(plan.runs, peer_runs if labels else 0)):
            if round_ < plan.runs:
                for name in plan.chosen:
                    stack.reset()
                    report.add(name, WORKLOADS[name](stack, sizes))
            if labels and harness is not None and round_ < peer_runs:
                print(f"  peers, round {round_ + 1}: {', '.join(labels)} ({harness})", flush=True)
                documents.append(
                    peers.run_harness(
                        harness, labels, 1, sizes.drain_jobs, sizes.pickup_jobs, sizes.pickup_rate
                    )
                )
    finally:
        stack.close()
    about["load_average_end"] = machine.load_average()
    extra: dict[str, Any] = {}
    print("\n" + report.table())
    if documents:
        rows = peers.ratios(report.results, peers.read_peers(documents))
        extra = {"peers": documents, "ratios": peers.as_json(rows)}
        print("\nJobfleet against the best peer of each figure (medians of the runs)")
        print(peers.ratio_table(rows))
    print(f"\nwritten to {report.write(plan.out, plan.quick, plan.runs, about, **extra)}")
