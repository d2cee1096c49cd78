"""python -m app bench [--runs N] [--quick] [--only a,b] [--api-workers N] [--out DIR]."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from app.settings import Settings
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
    return parser


def main(settings: Settings, argv: Sequence[str]) -> int:
    args = _parser().parse_args(argv)
    only = [name.strip() for name in args.only.split(",")] if args.only else []
    unknown = set(only) - set(WORKLOADS)
    if unknown:
        _parser().error(f"unknown workloads: {', '.join(sorted(unknown))}")
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
        run(settings, chosen, args.runs, args.quick, args.api_workers, Path(args.out))
    finally:
        for server in reversed(started):
            server.stop()
    return 0


def run(
    settings: Settings, chosen: list[str], runs: int, quick: bool, api_workers: int, out: Path
) -> None:
    """Each chosen workload `runs` times, each run on a fresh database; print and write."""
    sizes = QUICK if quick else Sizes()
    stack = Stack(settings, api_workers)
    report = Report()
    try:
        for name in chosen:
            for _ in range(runs):
                stack.reset()
                report.add(name, WORKLOADS[name](stack, sizes))
    finally:
        stack.close()
    print("\n" + report.table())
    print(f"\nwritten to {report.write(out, quick, runs)}")
