"""The README's tour, run as printed against a real `python -m app dev`, twice in a row.

Every ```sh block under "## Five-minute tour" runs, in order, in one bash per pass (with
`set -euo pipefail`, so every command of a block must succeed). A block followed by a ```text
block must print what that block shows, up to what changes from run to run; a block without
one must print nothing. The README's replies are wrapped and elided with `...`, so they are
compared by shape: status codes and plain lines exactly once ids, times, worker ids and metric
values are masked; JSON by its field names and the values that do not depend on the run.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from app.services.context import Context
from app.settings import Settings
from tests.helpers import HEAVY, ROOT, LiveDev, settings_env

pytestmark = pytest.mark.live

README = ROOT / "README.md"
TOUR_HEADING = "## Five-minute tour"
PASS_TIMEOUT = 60

MASKS = [
    (re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"), "<id>"),
    (re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)"), "<time>"),
    # host:pid:n (a worker process) and host:manager:pid
    (re.compile(r"[\w.-]+:(manager:\d+|\d+:\d+)\b"), "<worker>"),
    (re.compile(r"\bjf_[\w-]{20,}"), "<key>"),
    (re.compile(r"\.py:\d+"), ".py:<line>"),
    # Metric samples: the host label, a worker's state at its last heartbeat, the value.
    (re.compile(r'host="[^"]*"'), 'host="<host>"'),
    (re.compile(r'state="(busy|idle)"'), 'state="<state>"'),
    (re.compile(r"(?<=[}\s])\d+\.\d+(e[+-]?\d+)?$"), "<n>"),
]
# JSON fields whose values depend on what earlier runs left behind.
VARYING = {
    "total", "next_cursor", "oldest_waiting_seconds", "ready_in_redis",
    "queued", "scheduled", "processing", "completed", "failed", "cancelled",
}  # fmt: skip
PAIR = re.compile(
    r'"(\w+)"\s*:\s*("(?:[^"\\]|\\.)*"|-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?|true|false|null|[{\[])'
)


@dataclass
class Block:
    line: int  # of its opening fence in README.md, for messages
    script: str
    expected: str | None  # the ```text block that follows, if any


def tour_blocks(text: str) -> list[Block]:
    """The ```sh blocks of the tour, each with the ```text block right after it, if any."""
    lines = text.splitlines()
    start = lines.index(TOUR_HEADING)
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
    fences: list[tuple[int, int, str]] = []  # (opening line, closing line, language): 0-based
    i = start
    while i < end:
        if lines[i].startswith("```"):
            closing = lines.index("```", i + 1)
            fences.append((i, closing, lines[i][3:].strip()))
            i = closing
        i += 1
    blocks: list[Block] = []
    for n, (opening, closing, language) in enumerate(fences):
        if language != "sh":
            continue
        script = "\n".join(lines[opening + 1 : closing])
        after = fences[n + 1] if n + 1 < len(fences) else None
        expected = None
        if after and after[2] == "text" and not "".join(lines[closing + 1 : after[0]]).strip():
            expected = "\n".join(lines[after[0] + 1 : after[1]])
        blocks.append(Block(opening + 1, script, expected))
    return blocks


def mask(text: str) -> str:
    for pattern, replacement in MASKS:
        text = pattern.sub(replacement, text)
    return text


def records(text: str) -> list[str]:
    """Lines, with the README's wrapped continuation lines (indented) joined to their first."""
    joined: list[str] = []
    for line in text.splitlines():
        line = line.rstrip()
        if not line:
            continue
        if line.startswith(" ") and joined:
            joined[-1] += " " + line.strip()
        else:
            joined.append(line)
    return joined


def is_json(record: str) -> bool:
    return record.startswith(("{", "["))


def group(record: str) -> str:
    """What consecutive lines of one kind share (a worker line, a metric's samples)."""
    return "json" if is_json(record) else mask(record).split()[0].split("{")[0]


def grouped(lines: list[str]) -> list[list[str]]:
    groups: list[list[str]] = []
    for line in lines:
        if groups and not is_json(line) and group(groups[-1][0]) == group(line):
            groups[-1].append(line)
        else:
            groups.append([line])
    return groups


def flatten(value: Any) -> Iterator[tuple[str, Any]]:
    """(field, value) of every field at any depth; containers as their opening bracket."""
    if isinstance(value, dict):
        for key, inner in value.items():
            yield key, "{" if isinstance(inner, dict) else "[" if isinstance(inner, list) else inner
            yield from flatten(inner)
    elif isinstance(value, list):
        for inner in value:
            yield from flatten(inner)


def json_mismatches(expected: str, actual: str) -> list[str]:
    """What the elided JSON in the README shows that the actual reply lacks."""
    try:
        document = json.loads(actual)
    except ValueError:
        return [f"not JSON: {actual}"]
    if expected.startswith("[") != isinstance(document, list):
        return [f"expected {expected[0]}...: {actual}"]
    fields: dict[str, list[Any]] = {}
    for key, value in flatten(document):
        fields.setdefault(key, []).append(value)
    problems: list[str] = []
    for key, raw in PAIR.findall(mask(expected)):
        if key not in fields:
            problems.append(f"no field {key!r}")
            continue
        if key in VARYING or raw in "{[":
            continue
        want = json.loads(raw)
        if isinstance(want, str):
            pattern = re.compile(".*".join(re.escape(part) for part in want.split("...")))
            found = [v for v in fields[key] if isinstance(v, str) and pattern.fullmatch(mask(v))]
        else:
            found = [v for v in fields[key] if v == want and type(v) is type(want)]
        if not found:
            problems.append(f"{key}: expected {raw}, got {fields[key]}")
    return problems


def shape_mismatches(expected: str | None, actual: str) -> list[str]:
    if expected is None:
        return [f"printed {actual!r}, the README shows no output"] if actual.strip() else []
    want, got = grouped(records(expected)), grouped(records(actual))
    if [group(g[0]) for g in want] != [group(g[0]) for g in got]:
        return [f"lines {[group(g[0]) for g in got]}, the README {[group(g[0]) for g in want]}"]
    problems: list[str] = []
    for wanted, printed in zip(want, got, strict=True):
        if is_json(wanted[0]):
            problems += json_mismatches(wanted[0], printed[0])
            continue
        shapes = {mask(line) for line in wanted}
        problems += [
            f"{line!r} is not like {sorted(shapes)}" for line in printed if mask(line) not in shapes
        ]
    return problems


def run_tour(blocks: list[Block], env: dict[str, str], workdir: Path) -> list[str]:
    """Run the blocks in one bash, as a reader pastes them one after the other; their outputs.

    Every command of every block must succeed and write nothing on stderr.
    """
    driver = ["set -euo pipefail", f"cd {ROOT}"]
    for n, block in enumerate(blocks):
        (workdir / f"{n}.sh").write_text(block.script + "\n")
        driver.append(f"source {workdir}/{n}.sh >{workdir}/{n}.out 2>{workdir}/{n}.err")
    # A session of its own: on timeout, the curl or sleep it was running goes with it.
    shell = subprocess.Popen(["bash", "-c", "\n".join(driver)], env=env, start_new_session=True)
    try:
        status: int | None = shell.wait(timeout=PASS_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(shell.pid, signal.SIGKILL)
        shell.wait()
        status = None
    outputs: list[str] = []
    for n, block in enumerate(blocks):
        if not (workdir / f"{n}.out").exists():
            break
        outputs.append((workdir / f"{n}.out").read_text())
        errors = (workdir / f"{n}.err").read_text()
        # The block that stopped the run is the last one that started.
        stopped = status != 0 and not (workdir / f"{n + 1}.out").exists()
        if errors or stopped:
            if status is None:
                outcome = f"still running after {PASS_TIMEOUT} s"
            elif stopped:
                outcome = f"exit status {status}"
            else:
                outcome = "wrote on stderr"
            raise AssertionError(
                f"README.md:{block.line}: {outcome}\n{block.script}\n"
                f"stdout: {outputs[-1]}\nstderr: {errors}"
            )
    assert len(outputs) == len(blocks)
    return outputs


def test_the_tours_blocks_are_found_and_paired_with_their_outputs() -> None:
    blocks = tour_blocks(README.read_text())
    assert len(blocks) > 10
    assert all(b.expected is not None for b in blocks[1:]), [b.line for b in blocks[1:]]
    # The tour must reach the test's API, not whatever listens on the default port.
    for block in blocks:
        bare = block.script.replace("${API:-http://127.0.0.1:8000}", "$API")
        assert ":8000" not in bare, f"README.md:{block.line}"


def test_shapes_catch_a_different_reply() -> None:
    expected = '{"id":"851ff7ae-af2d-4cac-9cfc-d5a37a8bcb26", ... ,"status":"completed", ... }\n200'
    same = '{"id":"11111111-2222-3333-4444-555555555555","status":"completed","x":1}\n200\n'
    assert shape_mismatches(expected, same) == []
    assert shape_mismatches(expected, same.replace("completed", "queued"))
    assert shape_mismatches(expected, same.replace('"status"', '"state"'))
    assert shape_mismatches(expected, same.replace("200", "201"))
    assert shape_mismatches(None, "anything")
    lines = "worker docs:9812:1 busy ['80f0fc19-bedc-4c08-ae9e-7147f6c28400']\n"
    lines += "worker docs:9812:2 idle []"
    assert shape_mismatches(lines, "worker dev-1:77:1 idle []") == []
    assert shape_mismatches(lines, "worker dev-1:77:1 stopping []")


@HEAVY
def test_the_readme_tour_runs_twice_as_printed(
    settings: Settings, ctx: Context, tmp_path: Path
) -> None:
    blocks = tour_blocks(README.read_text())
    dev = LiveDev(settings, tmp_path / "local")
    try:
        # The command line of this checkout's client package, whichever the venv's editable
        # install of it names.
        env = settings_env(
            settings, API=dev.url, JOBFLEET_KEY=dev.key, PYTHONPATH=str(ROOT / "client" / "src")
        )
        for tour in (1, 2):
            workdir = tmp_path / f"tour-{tour}"
            workdir.mkdir()
            outputs = run_tour(blocks, env, workdir)
            for block, output in zip(blocks, outputs, strict=True):
                problems = shape_mismatches(block.expected, output)
                assert not problems, f"tour {tour}, README.md:{block.line}:\n{output}\n{problems}"
        assert dev.interrupt() == 0
    finally:
        dev.close()
