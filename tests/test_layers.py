"""The layers of app/ as docs/ARCHITECTURE.md draws them: every import of every module under
app/ (lazy and type-checking ones included) against the documented direction.

    entry points (app.main, app.cli, app.enqueue) -> api -> services -> store | dispatch -> domain
                                                     ui -> services
                                                     workers -> services

app.settings, app.logging, app.metrics and app.runtime are shared by every layer and import
nothing but the domain. Routers, dashboard pages and workers reach Postgres and Redis only
through services: they take nothing of a database or Redis client but its exception classes,
and touch no connection handle of the Context. Only app.main imports the dashboard.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
APP = ROOT / "app"

PACKAGES = {
    "app.api": "api",
    "app.ui": "ui",
    "app.services": "services",
    "app.store": "store",
    "app.migrations": "store",  # the schema's history, run by Alembic from app.store.admin
    "app.dispatch": "dispatch",
    "app.domain": "domain",
    "app.workers": "workers",
}
SHARED = {"app.settings", "app.logging", "app.metrics", "app.runtime"}
# The entry points assemble the layers: app.main builds the API from its routers, app.cli
# starts every process, app.enqueue is what applications call inside their own transactions.
ENTRY = {"app", "app.__main__", "app.cli", "app.main", "app.enqueue"}

MAY_IMPORT = {
    "entry": {"entry", "api", "ui", "services", "store", "dispatch", "domain", "workers", "shared"},
    "api": {"api", "services", "domain", "shared"},
    # The dashboard's pages are routers too: services only, never the API's modules.
    "ui": {"ui", "services", "domain", "shared"},
    "workers": {"workers", "services", "domain", "shared"},
    "services": {"services", "store", "dispatch", "domain", "shared"},
    "store": {"store", "domain", "shared"},
    "dispatch": {"dispatch", "domain", "shared"},
    "shared": {"shared", "domain"},
    "domain": {"domain"},
}

# What only the store and dispatch use: the clients of Postgres and Redis. Their exception
# classes are fine anywhere: a router or a job loop handles an outage.
CLIENTS = {"sqlalchemy", "psycopg2", "redis", "alembic"}
EXCEPTIONS = ("sqlalchemy.exc", "redis.exceptions")
# The connection handles of app.services.context.Context.
HANDLES = {"db", "redis", "aredis"}


def layer_of(module: str) -> str | None:
    if module in ENTRY:
        return "entry"
    if module in SHARED:
        return "shared"
    for package, layer in PACKAGES.items():
        if module == package or module.startswith(package + "."):
            return layer
    return None


def modules() -> dict[str, Path]:
    found = {}
    for path in sorted(APP.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imports(source: str) -> list[tuple[int, str]]:
    """(line, module) of every import of the source. `from app.services import auth` counts
    as app.services, of the same layer; `from app import cli` as app.cli."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0 and node.module, "app/ imports absolutely"
            if node.module == "app":
                found += [(node.lineno, f"app.{alias.name}") for alias in node.names]
            else:
                found.append((node.lineno, node.module))
    return found


def crossings(module: str, source: str) -> list[str]:
    """Each import of `module` against the layers, described."""
    layer = layer_of(module)
    assert layer is not None, module
    found = []
    for line, imported in imports(source):
        if imported == "app" or imported.startswith("app."):
            target = layer_of(imported)
            if target not in MAY_IMPORT[layer]:
                found.append(f"{module}:{line}: {layer} -> {imported} ({target})")
    return found


def test_every_module_has_a_layer() -> None:
    assert [name for name in modules() if layer_of(name) is None] == []


def test_imports_go_the_documented_way() -> None:
    found = []
    for name, path in modules().items():
        if layer_of(name) is not None:
            found += crossings(name, path.read_text())
    assert found == []


def test_only_main_imports_the_dashboard() -> None:
    importers = {
        name
        for name, path in modules().items()
        if layer_of(name) != "ui"
        for _, imported in imports(path.read_text())
        if layer_of(imported) == "ui"
    }
    assert importers == {"app.main"}


def client_uses(module: str, source: str) -> list[str]:
    """What the source takes of a Postgres or Redis client other than its exception classes
    (`redis.RedisError` after `import redis` is fine, `redis.Redis` is not), and its uses of
    the Context's connection handles."""
    found = []
    bound = set()  # names of client packages imported whole
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in CLIENTS and not alias.name.startswith(EXCEPTIONS):
                    bound.add(alias.asname or alias.name.split(".")[0])
        elif isinstance(node, ast.ImportFrom):
            origin = node.module or ""
            if origin.split(".")[0] in CLIENTS and not origin.startswith(EXCEPTIONS):
                taken = [a.name for a in node.names if not a.name.endswith("Error")]
                found += [f"{module}:{node.lineno}: imports {origin}.{name}" for name in taken]
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute):
            continue
        if isinstance(node.value, ast.Name) and node.value.id in bound:
            if not node.attr.endswith("Error") and node.attr != "exceptions":
                found.append(f"{module}:{node.lineno}: uses {node.value.id}.{node.attr}")
        elif node.attr in HANDLES:
            found.append(f"{module}:{node.lineno}: uses the Context's .{node.attr}")
    return found


def test_routers_and_workers_reach_postgres_and_redis_through_services() -> None:
    found = []
    for name, path in modules().items():
        if layer_of(name) in {"api", "ui", "workers"}:
            found += client_uses(name, path.read_text())
    assert found == []


def test_the_walk_sees_clients_outside_the_services() -> None:
    source = (
        "import redis\n"
        "from sqlalchemy.exc import DBAPIError\n"
        "from sqlalchemy import text\n"
        "from redis import RedisError\n"
        "try:\n"
        "    redis.Redis().ping()\n"
        "    ctx.db.transaction()\n"
        "except (redis.RedisError, DBAPIError):\n"
        "    pass\n"
    )
    assert sorted(client_uses("app.api.example", source)) == [
        "app.api.example:3: imports sqlalchemy.text",
        "app.api.example:6: uses redis.Redis",
        "app.api.example:7: uses the Context's .db",
    ]


def test_the_walk_sees_imports_against_the_layers() -> None:
    source = (
        "import redis\n"
        "from app.api import deps\n"
        "from app.services import jobs\n"
        "from app.store.claims import claim\n"
        "from app.domain.states import JobStatus\n"
        "def later():\n"
        "    from app.workers.loop import JobLoop\n"
    )
    assert sorted(crossings("app.store.example", source)) == [
        "app.store.example:2: store -> app.api (api)",
        "app.store.example:3: store -> app.services (services)",
        "app.store.example:7: store -> app.workers.loop (workers)",
    ]
    assert sorted(crossings("app.api.example", source)) == [
        "app.api.example:4: api -> app.store.claims (store)",
        "app.api.example:7: api -> app.workers.loop (workers)",
    ]
    assert crossings("app.main", source) == []
    assert crossings("app.domain.example", "from app import cli\nimport app.settings\n") == [
        "app.domain.example:1: domain -> app.cli (entry)",
        "app.domain.example:2: domain -> app.settings (shared)",
    ]
