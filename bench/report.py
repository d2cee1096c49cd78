"""The benchmark's figures: printed as they come, then a table of each figure's median,
minimum and maximum over the runs, and a JSON file."""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


def _figure(value: float) -> str:
    return f"{value:,.2f}" if abs(value) < 10 else f"{value:,.1f}"


@dataclass
class Report:
    results: dict[str, list[dict[str, float]]] = field(default_factory=dict)

    def add(self, name: str, figures: dict[str, float]) -> None:
        self.results.setdefault(name, []).append(figures)
        shown = ", ".join(f"{k}={v:,.1f}" for k, v in figures.items())
        print(f"  {name}: {shown}", flush=True)

    def table(self) -> str:
        lines = [f"{'workload':<24}{'figure':<36}{'median':>12}{'min':>12}{'max':>12}"]
        for name, runs in self.results.items():
            for figure in runs[0]:
                values = [run[figure] for run in runs]
                shown = (statistics.median(values), min(values), max(values))
                columns = "".join(f"{_figure(value):>12}" for value in shown)
                lines.append(f"{name:<24}{figure:<36}{columns}")
        return "\n".join(lines)

    def write(
        self, out: Path, quick: bool, runs: int, machine: dict[str, Any], **extra: Any
    ) -> Path:
        """The figures as `<out>/bench-<time>.json`, with the machine they were measured on
        and anything else of the run (the peers, the ratios)."""
        out.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        path = out / f"bench-{stamp}.json"
        summary = {"at": stamp, "quick": quick, "runs": runs, "machine": machine}
        path.write_text(json.dumps({**summary, "results": self.results, **extra}, indent=2))
        return path
