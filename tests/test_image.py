"""The image: docker/Dockerfile runs the app unprivileged with cached dependencies, and its
build context (docker/Dockerfile.dockerignore) lets in the product and nothing else: no
tooling, tests or secrets. (No Docker engine is needed: the files are read.)"""

from __future__ import annotations

import json
import re

from app.settings import Settings
from tests.docker_files import DOCKER
from tests.helpers import ROOT


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of docker/Dockerfile, continuation lines joined."""
    text = re.sub(r"\\\n", " ", (DOCKER / "Dockerfile").read_text())
    lines = [line.strip() for line in text.splitlines()]
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1])
        for line in lines
        if line and not line.startswith("#")
    ]


def ignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parents decides."""

    def regex(pattern: str) -> str:
        out = re.escape(pattern.strip("/"))
        out = out.replace(r"\*\*/", "(.*/)?").replace(r"\*\*", ".*")
        return out.replace(r"\*", "[^/]*").replace(r"\?", "[^/]")

    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    verdict = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        body = regex(pattern[1:] if negated else pattern)
        if any(re.fullmatch(body, candidate) for candidate in candidates):
            verdict = not negated
    return verdict


def context_patterns() -> list[str]:
    """The patterns of docker/Dockerfile.dockerignore, in order."""
    return [
        line.strip()
        for line in (DOCKER / "Dockerfile.dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]


def files_under(folder: str) -> list[str]:
    """The files under `folder` of the repository, as paths relative to its root. (Walking the
    tree, not asking git: the tests also run in a container without git.)"""
    return [
        path.relative_to(ROOT).as_posix()
        for path in (ROOT / folder).rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    ]


def test_the_image_runs_the_app_unprivileged_with_cached_dependencies() -> None:
    steps = dockerfile()
    assert steps[0] == ("FROM", "python:3.11-slim")
    kinds = [kind for kind, _ in steps]
    copies = [args for kind, args in steps if kind == "COPY"]
    assert copies[0] == "requirements.txt ./"
    install = next(i for i, (kind, args) in enumerate(steps) if "pip install" in args)
    assert "requirements.txt" in steps[install][1] and "requirements-dev" not in steps[install][1]
    assert kinds.index("COPY") < install < kinds.index("COPY", kinds.index("COPY") + 1)
    user = [args for kind, args in steps if kind == "USER"]
    assert user and user[-1] not in ("root", "0")
    assert json.loads(dict(steps)["ENTRYPOINT"]) == ["python", "-m", "app"]
    assert json.loads(dict(steps)["CMD"]) == ["api"]
    environment = " ".join(args for kind, args in steps if kind == "ENV")
    for listener in ("API_HOST", "API_METRICS_HOST", "FLEET_METRICS_HOST"):
        assert f"{listener}=0.0.0.0" in environment
    assert set(re.findall(r"\b([A-Z][A-Z_]+)=", environment)) - {
        "PYTHONDONTWRITEBYTECODE", "PYTHONUNBUFFERED", "PIP_NO_CACHE_DIR",
        "PIP_DISABLE_PIP_VERSION_CHECK",
    } <= {name.upper() for name in Settings.model_fields}  # fmt: skip
    assert "/health" in dict(steps)["HEALTHCHECK"]

    # What the build context lets in: the app and its runtime requirements, nothing private.
    patterns = context_patterns()
    for source in (args.split()[0] for args in copies):
        assert not ignored(source.rstrip("/"), patterns), f"COPY {source} is ignored"
    for private in (".env", ".git/config", ".venv/bin/python", ".local/demo-key", "tests/x.py",
                    "app/__pycache__/cli.cpython-311.pyc", "requirements-dev.txt"):  # fmt: skip
        assert ignored(private, patterns), f"{private} would be sent to the builder"
    sources = [path for path in files_under("app") if path.endswith(".py")]
    assert sources and not [path for path in sources if ignored(path, patterns)]


def test_the_build_context_keeps_the_tooling_out() -> None:
    """devtools/, bench/, tests/ and scripts/ live beside the product and never reach the image:
    neither the build context nor a COPY lets any of their files in."""
    patterns = context_patterns()
    for folder in ("devtools", "bench", "tests", "scripts"):
        files = files_under(folder)
        assert files, f"nothing under {folder}/ to check"
        let_in = [path for path in files if not ignored(path, patterns)]
        assert not let_in, f"the build context lets in {let_in[:5]}"
    copied = [args.split()[:-1] for kind, args in dockerfile() if kind in ("COPY", "ADD")]
    assert [source for sources in copied for source in sources] == [
        "requirements.txt",
        "alembic.ini",
        "app",
    ]
    # The rule itself is checked: a pattern that let the tooling in would be caught.
    assert not ignored("devtools/dev.py", [*patterns, "!devtools/"])
