"""The alerting files as the tests read them: Alertmanager's configuration, the edit that
docs/OPERATIONS.md tells an operator to make to it, amtool, and the runbook anchors."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from tests.docker_files import DOCKER
from tests.helpers import ROOT

ALERTMANAGER_YML = DOCKER / "alertmanager" / "alertmanager.yml"
OPERATIONS_MD = ROOT / "docs" / "OPERATIONS.md"

# The receiver every alert goes to until the operator names another.
NULL_RECEIVER = '  - name: "null"\n'


def enable_operator(text: str) -> str:
    """alertmanager.yml after the documented edit: the `operator` receiver uncommented (the
    leading "# " of its lines removed) and named as the route's receiver."""
    assert text.count(NULL_RECEIVER) == 1, "the null receiver moved: update the edit"
    head, commented = text.split(NULL_RECEIVER)
    assert head.count('route:\n  receiver: "null"\n') == 1, "the route's receiver moved"
    head = head.replace('route:\n  receiver: "null"\n', "route:\n  receiver: operator\n")
    lines = commented.splitlines(keepends=True)
    assert lines and all(line.startswith("  # ") for line in lines), (
        "everything after the null receiver should be the commented operator receiver"
    )
    return head + NULL_RECEIVER + "".join(line[:2] + line[4:] for line in lines)


def amtool(*args: str, cwd: Path | None = None) -> str:
    result = subprocess.run(
        ["amtool", *args], capture_output=True, text=True, timeout=60, cwd=cwd, check=False
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"amtool {' '.join(args)} failed:\n{output}"
    return output


def heading_anchors(markdown: str) -> set[str]:
    """The anchors GitHub (and GitLab) give the headings of `markdown`: lower case, spaces to
    hyphens, punctuation other than hyphens and underscores dropped."""
    anchors = set()
    in_code = False
    for line in markdown.splitlines():
        if line.startswith("```"):
            in_code = not in_code
        match = None if in_code else re.match(r"#{1,6} +(.+?) *#*$", line)
        if match:
            title = re.sub(r"[^\w\- ]", "", match[1].lower())
            anchors.add(title.replace(" ", "-"))
    return anchors
