"""The client package stands on its own: `client/` builds a wheel that holds the `jobfleet`
package only and declares httpx as its only dependency; installed into a fresh virtualenv, it
runs (and its command line answers --help) with nothing of the server; and no module under
client/ imports `app` or anything but the standard library and httpx.

The install runs offline, so the test does not depend on the network: the wheel is built with
the repository venv's setuptools (no build isolation), installed with `--no-index --no-deps`,
and the fresh venv sees httpx's own dependency closure (the packages `pip install httpx` would
have put there, linked from the repository venv) and nothing else. A client that imported
anything beyond them would fail here.
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
import zipfile
from importlib.metadata import distribution
from pathlib import Path

from packaging.requirements import Requirement

from tests.helpers import ROOT
from tests.test_product_only import _imported

CLIENT = ROOT / "client"
SOURCES = sorted((CLIENT / "src" / "jobfleet").rglob("*.py"))


def _dependency_paths(name: str, seen: set[str]) -> set[Path]:
    """Where the top-level modules of distribution `name`, and of everything it requires in
    this Python, are installed."""
    dist = distribution(name)
    if dist.metadata["Name"].lower() in seen:
        return set()
    seen.add(dist.metadata["Name"].lower())
    paths = {
        Path(str(dist.locate_file(item.parts[0])))
        for item in dist.files or []
        if item.parts[0] not in ("..", "__pycache__")
        and not item.parts[0].endswith((".dist-info", ".pth"))
    }
    for requirement in map(Requirement, dist.requires or []):
        if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
            paths |= _dependency_paths(requirement.name, seen)
    return paths


def test_the_client_installs_alone_into_a_fresh_venv(tmp_path: Path) -> None:
    # Built from a copy: setuptools writes build/ and *.egg-info beside the sources.
    source = tmp_path / "client"
    shutil.copytree(
        CLIENT, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__")
    )
    wheels = tmp_path / "wheels"
    build = [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps"]
    build += ["--no-build-isolation", "--wheel-dir", str(wheels), str(source)]
    subprocess.run(build, check=True, cwd=tmp_path, timeout=120)
    (wheel,) = wheels.glob("jobfleet-*.whl")

    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        info = next(name for name in names if name.endswith(".dist-info/METADATA"))
        metadata = archive.read(info).decode()
        entry_points = archive.read(info.replace("METADATA", "entry_points.txt")).decode()
    assert {name.split("/")[0] for name in names if ".dist-info/" not in name} == {"jobfleet"}
    assert "jobfleet/py.typed" in names
    requires = [line for line in metadata.splitlines() if line.startswith("Requires-Dist:")]
    assert [Requirement(line.split(":", 1)[1]).name for line in requires] == ["httpx"]
    assert "jobfleet = jobfleet.cli:main" in entry_points

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    install = [sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet"]
    install += ["--no-index", "--no-deps", str(wheel)]
    subprocess.run(install, check=True, cwd=tmp_path, timeout=120)
    (site,) = (venv / "lib").glob("python*/site-packages")
    installed = {path.name for path in site.iterdir()} - {"__pycache__"}
    assert {name.split("-")[0] for name in installed} == {"jobfleet"}, installed

    deps = tmp_path / "httpx-and-its-dependencies"
    deps.mkdir()
    for path in _dependency_paths("httpx", set()):
        (deps / path.name).symlink_to(path)
    env = {"PATH": f"{venv / 'bin'}:/usr/bin:/bin", "PYTHONPATH": str(deps)}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        # Outside the repository: its root (and so app/) is not on the path.
        return subprocess.run(
            args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
        )

    where = run(str(python), "-c", "import jobfleet, sys; print(jobfleet.__file__)")
    assert where.returncode == 0, where.stderr
    assert Path(where.stdout.strip()).is_relative_to(site)
    no_app = run(str(python), "-c", "import importlib.util as u; print(u.find_spec('app'))")
    assert no_app.stdout.strip() == "None", "the server's package is not reachable"
    testing = run(str(python), "-c", "from jobfleet.testing import FakeClient; FakeClient()")
    assert testing.returncode == 0, testing.stderr
    if (CLIENT / "src" / "jobfleet" / "cli.py").exists():
        helped = run(str(venv / "bin" / "jobfleet"), "--help")
        assert helped.returncode == 0 and "jobfleet" in helped.stdout, helped.stderr


def test_the_client_imports_only_the_standard_library_and_httpx() -> None:
    assert SOURCES, "no client sources found"
    allowed = {"jobfleet", "httpx"}
    for path in SOURCES:
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            for module in _imported(node):
                top = module.split(".")[0]
                where = f"{path.relative_to(ROOT)}:{getattr(node, 'lineno', '?')} imports {module}"
                assert top != "app", where
                assert top in allowed or top in sys.stdlib_module_names, where


def test_the_server_does_not_import_the_client() -> None:
    """The image ships app/ without client/: nothing of the server may need it."""
    for path in sorted((ROOT / "app").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            for module in _imported(node):
                assert module.split(".")[0] != "jobfleet", f"{path.relative_to(ROOT)} imports it"
