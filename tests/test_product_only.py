"""app/ holds the product only: the modules that start processes are the worker manager and
the API supervisor, and nothing under app/ imports the tooling beside it (devtools/, bench/) or
the tests. Found by walking the syntax tree of every module, not by grepping its text."""

from __future__ import annotations

import ast

from tests.helpers import ROOT

APP = ROOT / "app"
# The only modules of the product that start processes: the fleet's children, the API's workers.
STARTS_PROCESSES = {"app/workers/manager.py", "app/api/serve.py"}
PROCESS_MODULES = {"subprocess", "shutil", "multiprocessing", "pty", "concurrent.futures.process"}
PROCESS_NAMES = {
    "Popen", "ProcessPoolExecutor", "create_subprocess_exec", "create_subprocess_shell",
    "fork", "forkpty", "posix_spawn", "posix_spawnp", "system", "popen",
}  # fmt: skip
TOOLING = {"devtools", "bench", "tests"}


def _imported(node: ast.AST) -> list[str]:
    """The modules an import statement, or a call of __import__ / import_module with a
    constant name, brings in."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
        return [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name | ast.Attribute)
        and (node.func.id if isinstance(node.func, ast.Name) else node.func.attr)
        in ("__import__", "import_module")
        and node.args
        and isinstance(node.args[0], ast.Constant)
        and isinstance(node.args[0].value, str)
    ):
        return [node.args[0].value]
    return []


def _within(module: str, packages: set[str]) -> bool:
    return any(module == package or module.startswith(f"{package}.") for package in packages)


def process_uses(source: str) -> list[str]:
    """How `source` starts processes: the process modules it imports, and the names of
    process-starting calls it uses (os.fork, os.spawn*, os.exec*, Popen, ...)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        found += [
            f"imports {name}"
            for name in _imported(node)
            if _within(name, PROCESS_MODULES) or name.rsplit(".", 1)[-1] in PROCESS_NAMES
        ]
        name = node.attr if isinstance(node, ast.Attribute) else getattr(node, "id", None)
        if isinstance(name, str) and (
            name in PROCESS_NAMES or name.startswith(("spawnl", "spawnv", "execl", "execv"))
        ):
            found.append(f"uses {name}")
    return found


def tooling_imports(source: str) -> list[str]:
    return [
        name
        for node in ast.walk(ast.parse(source))
        for name in _imported(node)
        if _within(name, TOOLING)
    ]


def product_modules() -> dict[str, str]:
    modules = {
        path.relative_to(ROOT).as_posix(): path.read_text()
        for path in APP.rglob("*.py")
        if "__pycache__" not in path.parts
    }
    assert len(modules) > 50, "app/ was not found where expected"
    return modules


def test_only_the_worker_manager_and_the_api_supervisor_start_processes() -> None:
    starting = {
        path: uses for path, source in product_modules().items() if (uses := process_uses(source))
    }
    assert set(starting) <= STARTS_PROCESSES, {
        path: uses for path, uses in starting.items() if path not in STARTS_PROCESSES
    }


def test_the_product_imports_no_tooling() -> None:
    importing = {
        path: names
        for path, source in product_modules().items()
        if (names := tooling_imports(source))
    }
    assert not importing, importing


def test_the_walk_sees_every_way_of_starting_a_process() -> None:
    caught = {
        "import subprocess": ["imports subprocess"],
        "from shutil import rmtree": ["imports shutil", "imports shutil.rmtree"],
        "import multiprocessing.pool as p": ["imports multiprocessing.pool"],
        "from concurrent.futures import ProcessPoolExecutor": [
            "imports concurrent.futures.ProcessPoolExecutor"
        ],
        "from os import fork": ["imports os.fork"],
        "import importlib\nimportlib.import_module('subprocess')": ["imports subprocess"],
        "import os\nos.fork()": ["uses fork"],
        "import os\nos.execvp('x', ['x'])": ["uses execvp"],
        "import os\nos.spawnlp(0, 'x')": ["uses spawnlp"],
        "import asyncio\nasyncio.create_subprocess_exec('x')": ["uses create_subprocess_exec"],
    }  # fmt: skip
    for source, expected in caught.items():
        assert sorted(process_uses(source)) == sorted(expected), source
    assert process_uses("import os, signal\nos.kill(1, signal.SIGTERM)") == []
    assert tooling_imports("from devtools.dev import main") == ["devtools.dev", "devtools.dev.main"]
    assert tooling_imports("import benchmark") == []
