"""One state machine: the table of app/domain/states.py against the SQL of app/store, the sets
the services act on, and the diagram of docs/ARCHITECTURE.md.

Every statement that writes `jobs.status` is declared with the step it performs
(app/store/transitions.py). These tests read each declared statement's SQL and check that its
guard accepts exactly the statuses the step moves jobs out of and that it writes only statuses
the step may leave a job in; and they read the source of app/store for status writes that were
never declared. A move used in SQL and missing from the table fails here, and so does a move of
the table that no statement performs.
"""

from __future__ import annotations

import ast
import importlib
import pkgutil
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

import app.store
from app.domain import states
from app.domain.states import (
    CANCELLABLE,
    DELETABLE,
    MOVES,
    RETRYABLE,
    TERMINAL,
    TRANSITIONS,
    JobStatus,
    Step,
    can_transition,
)
from app.store import transitions
from app.store.transitions import FINISH, REQUEUE, StatusChange

ROOT = Path(__file__).resolve().parent.parent
STORE = ROOT / "app" / "store"
SERVICES = ROOT / "app" / "services"

# --- reading the SQL ------------------------------------------------------------------------

# Quoted literals, casts, parameters, (dotted) names, `||`, and any other single character.
_TOKEN = re.compile(r"'[^']*'|::|:\w+|\w+(?:\.\w+)*|\|\||\S")
_STATUS = r"(?<![\w:.])(?:\w+\.)?status(?: \|\| '')?"
_GUARD_ONE = re.compile(_STATUS + r" = '(\w+)'")
_GUARD_IN = re.compile(_STATUS + r" IN \(([^)]*)\)")
_GUARD_ANY = re.compile(_STATUS + r" = ANY \( (?:CAST \( )?(:\w+)")
_LITERAL = re.compile(r"'(\w+)'")
_PARAM = re.compile(r"(?<!:):(\w+)")


@dataclass(frozen=True)
class Effect:
    """What one statement does to `jobs.status`, as read from its SQL."""

    writes: frozenset[str]  # status literals it may write
    write_params: frozenset[str]  # parameters it writes a status from
    guard: frozenset[str] | None  # status literals its guard accepts; None: no literal guard
    guard_params: frozenset[str]


def _tokens(sql: str) -> list[str]:
    return _TOKEN.findall(" ".join(sql.split()))


def _until(tokens: list[str], stop: set[str]) -> list[str]:
    """The tokens up to a top-level one of `stop`, or up to the paren closing this level."""
    depth = 0
    for index, token in enumerate(tokens):
        upper = token.upper()
        if depth == 0 and (upper in stop or token == ")"):
            return tokens[:index]
        if token == "(" or upper == "CASE":
            depth += 1
        elif token == ")" or upper == "END":
            depth -= 1
    return tokens


def _items(tokens: list[str]) -> list[list[str]]:
    """The tokens split at top-level commas."""
    items: list[list[str]] = [[]]
    depth = 0
    for token in tokens:
        if token == "(" or token.upper() == "CASE":
            depth += 1
        elif token == ")" or token.upper() == "END":
            depth -= 1
        if depth == 0 and token == ",":
            items.append([])
        else:
            items[-1].append(token)
    return items


def _guard(where: list[str]) -> tuple[frozenset[str] | None, frozenset[str]]:
    text = " ".join(where)
    literals = set(_GUARD_ONE.findall(text))
    for listed in _GUARD_IN.findall(text):
        literals |= set(_LITERAL.findall(listed))
    params = frozenset(_GUARD_ANY.findall(text))
    return (frozenset(literals) if literals else None), params


def _effect(expression: list[str], where: list[str]) -> Effect:
    text = " ".join(expression)
    guard, guard_params = _guard(where)
    return Effect(
        frozenset(_LITERAL.findall(text)), frozenset(_PARAM.findall(text)), guard, guard_params
    )


def effects(sql: str) -> list[Effect]:
    """The effect on `jobs.status` of each UPDATE of jobs that sets it, and of each INSERT
    into jobs, in the statement."""
    tokens = _tokens(sql)
    found = []
    for index, token in enumerate(tokens):
        upper = token.upper()
        if upper == "UPDATE" and tokens[index + 1] == "jobs":
            start = tokens.index("SET", index) + 1
            assignments = _until(tokens[start:], {"FROM", "WHERE", "RETURNING"})
            status = [item[2:] for item in _items(assignments) if _is_status(item)]
            if not status:
                continue
            rest = _until(tokens[start + len(assignments) :], {"RETURNING"})
            where = rest[rest.index("WHERE") + 1 :] if "WHERE" in rest else []
            found.append(_effect(status[0], where))
        elif upper == "INSERT" and tokens[index + 2] == "jobs":
            columns = _until(tokens[index + 4 :], set())
            names = [item[0] for item in _items(columns)]
            after = tokens[index + 4 + len(columns) + 1 :]
            assert after[0].upper() == "SELECT", "an INSERT into jobs is written INSERT ... SELECT"
            values = _items(_until(after[1:], {"FROM"}))
            found.append(_effect(values[names.index("status")], []))
    return found


def _is_status(item: list[str]) -> bool:
    return len(item) > 2 and item[1] == "=" and item[0].split(".")[-1] == "status"


def _declared() -> list[tuple[StatusChange, str]]:
    for module in pkgutil.iter_modules(app.store.__path__):
        importlib.import_module(f"app.store.{module.name}")
    return transitions.declared()


# --- the reader itself ----------------------------------------------------------------------


def test_the_reader_sees_guards_and_writes() -> None:
    (claim,) = effects(
        "UPDATE jobs SET status = 'processing', attempts = attempts + 1 "
        "WHERE id = ANY(:ids) AND status || '' = 'queued' RETURNING id"
    )
    assert claim == Effect(
        frozenset({"processing"}), frozenset(), frozenset({"queued"}), frozenset()
    )
    (finish,) = effects(
        "WITH f AS (UPDATE jobs j SET result = NULL, status = CASE WHEN j.cancel_requested "
        "THEN 'cancelled' ELSE :status END, run_at = CASE WHEN :status = 'scheduled' THEN "
        "now() END FROM input i WHERE j.id = i.id AND j.status IN ('processing') "
        "RETURNING j.id) SELECT * FROM f"
    )
    assert finish.writes == {"cancelled"} and finish.write_params == {"status"}
    assert finish.guard == {"processing"}
    (requeue,) = effects(
        "UPDATE jobs SET status = 'queued' WHERE id = :id "
        "AND status = ANY(CAST(:from_states AS text[]))"
    )
    assert requeue.guard is None and requeue.guard_params == {":from_states"}
    (insert,) = effects(
        "INSERT INTO jobs (id, status, run_at) SELECT id, "
        "CASE WHEN a > now() THEN 'scheduled' ELSE 'queued' END, a FROM t RETURNING id"
    )
    assert insert.writes == {"scheduled", "queued"} and insert.guard is None
    # An update that leaves the status alone has no effect on it; a read has none either.
    assert effects("UPDATE jobs SET cancel_requested = true WHERE status = 'processing'") == []
    assert effects("SELECT id FROM jobs WHERE status = 'queued'") == []


# --- the table --------------------------------------------------------------------------------


def test_the_table_is_one_move_per_pair_and_every_status_is_reachable() -> None:
    pairs = [(m.source, m.target) for m in MOVES]
    assert len(pairs) == len(set(pairs))
    assert all(m.steps for m in MOVES)
    reached = {m.target for m in MOVES if m.source is None}
    while True:
        more = {m.target for m in MOVES if m.source in reached} - reached
        if not more:
            break
        reached |= more
    assert reached == set(JobStatus)
    assert TRANSITIONS[JobStatus.COMPLETED] == frozenset()
    for status in JobStatus:
        assert all(can_transition(status, t) for t in TRANSITIONS[status])


def test_the_sets_the_services_use_come_from_the_table() -> None:
    assert {JobStatus.QUEUED, JobStatus.SCHEDULED} == CANCELLABLE
    assert {JobStatus.FAILED, JobStatus.CANCELLED} == RETRYABLE
    assert {JobStatus.PROCESSING} == states.sources(Step.FINISH) == states.CANCEL_REQUESTABLE
    assert JobStatus.PROCESSING not in DELETABLE and DELETABLE | {JobStatus.PROCESSING} == set(
        JobStatus
    )
    # Finished jobs leave their status only by a requeue (retry, replay).
    for status in TERMINAL:
        assert {m.steps for m in MOVES if m.source is status} <= {frozenset({Step.REQUEUE})}


def test_a_step_refuses_a_status_it_may_not_write_or_move() -> None:
    assert FINISH.bind_target(JobStatus.SCHEDULED) == "scheduled"
    with pytest.raises(ValueError, match="cannot leave a job queued"):
        FINISH.bind_target(JobStatus.QUEUED)
    assert REQUEUE.bind_sources({JobStatus.FAILED}) == ["failed"]
    with pytest.raises(ValueError, match="cannot move a job out of"):
        REQUEUE.bind_sources({JobStatus.COMPLETED})
    with pytest.raises(ValueError):
        REQUEUE.bind_sources(set())


# --- the SQL ----------------------------------------------------------------------------------


def test_every_declared_change_is_in_the_table() -> None:
    declared = _declared()
    assert {change.step for change, _ in declared} >= set(Step)
    for change, _ in declared:
        if change.step is None:  # a flag: guarded by a status it leaves alone
            assert change.sources and not change.targets
        for target in change.targets:
            for source in change.sources or {None}:
                assert any(
                    m.source is source and m.target is target and change.step in m.steps
                    for m in MOVES
                ), f"{source} -> {target} by {change.step} is not in the table"


def test_declared_statements_guard_and_write_what_their_step_allows() -> None:
    for change, sql in _declared():
        found = effects(sql)
        name = f"{change.step}: {' '.join(sql.split())[:80]}"
        if not change.targets:  # a flag: guarded, and the status left alone
            assert found == [], name
            assert _guard(_tokens(sql))[0] == {s.value for s in change.sources}, name
            continue
        assert len(found) == 1, f"{name}: one status write per declared statement"
        (effect,) = found
        allowed = {s.value for s in change.targets}
        assert effect.writes <= allowed, f"{name} writes {effect.writes - allowed}"
        assert effect.writes or effect.write_params, name
        for param in effect.write_params:  # bound through FINISH.bind_target and the like
            assert param == "status", f"{name}: a status parameter is named :status"
        if change.sources:
            assert effect.guard is not None or effect.guard_params, f"{name} is unguarded"
            if effect.guard is not None:
                assert effect.guard == {s.value for s in change.sources}, name
        else:
            assert effect.guard is None and not effect.guard_params, name


def test_every_move_of_the_table_is_performed_by_a_declared_statement() -> None:
    performed: set[tuple[JobStatus | None, JobStatus, Step]] = set()
    for change, sql in _declared():
        if change.step is None:
            continue
        (effect,) = effects(sql)
        written = set(change.targets) if effect.write_params else set(map(JobStatus, effect.writes))
        guarded = set(change.sources) if effect.guard is None else set(map(JobStatus, effect.guard))
        for target in written:
            for source in guarded or {None}:
                performed.add((source, target, change.step))
    for move in MOVES:
        for step in move.steps:
            assert (move.source, move.target, step) in performed, f"{move} by {step}"


def _store_strings() -> list[tuple[str, str]]:
    """Every string of app/store's source but docstrings (where), `{}` where an f-string
    interpolates."""
    found = []
    for path in sorted(STORE.glob("*.py")):
        tree = ast.parse(path.read_text())
        docstrings = {
            id(node.body[0].value)
            for node in ast.walk(tree)
            if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef)
            and node.body
            and isinstance(node.body[0], ast.Expr)
        }
        for node in ast.walk(tree):
            where = f"{path.relative_to(ROOT)}:{getattr(node, 'lineno', 0)}"
            if isinstance(node, ast.JoinedStr):
                text = "".join(
                    part.value if isinstance(part, ast.Constant) else "{}" for part in node.values
                )
                found.append((where, text))
            elif (
                isinstance(node, ast.Constant)
                and isinstance(node.value, str)
                and id(node) not in docstrings
            ):
                found.append((where, node.value))
    return found


_WRITES_STATUS = re.compile(
    r"\bSET\s+(?:\w+\.)?status\s*=|,\s*(?:\w+\.)?status\s*=\s*(?:'|CASE\b|:)"
    r"|\bINSERT\s+INTO\s+jobs\s*\([^)]*\bstatus\b",
    re.IGNORECASE,
)


def _undeclared(strings: list[tuple[str, str]], declared: list[str]) -> list[str]:
    """Where a string writes a status and no declared statement holds it. A `{...}` of the
    string (a format or f-string placeholder) matches anything."""
    squashed = ["".join(sql.split()) for sql in declared]
    found = []
    for where, text in strings:
        if not _WRITES_STATUS.search(text):
            continue
        pieces = re.split(r"\{\w*\}", "".join(text.split()))
        pattern = re.compile(".*?".join(re.escape(piece) for piece in pieces), re.DOTALL)
        if not any(pattern.search(sql) for sql in squashed):
            found.append(where)
    return found


def test_the_scan_finds_a_status_write_that_was_not_declared() -> None:
    declared = [sql for _, sql in _declared()]
    claim = next(sql for change, sql in _declared() if change.step is Step.CLAIM)
    strings = [
        ("declared", claim),
        ("a fragment of a declared one, with a placeholder", "SET status = {}, attempts"),
        ("undeclared", "UPDATE jobs SET status = 'completed' WHERE id = :id"),
        ("undeclared, later in a SET list", "UPDATE jobs SET x = 1, status = 'failed'"),
        ("undeclared insert", "INSERT INTO jobs (id, status) SELECT id, 'completed' FROM t"),
        ("a read", "SELECT id FROM jobs WHERE status = 'queued'"),
    ]
    assert _undeclared(strings, declared) == [
        "undeclared",
        "undeclared, later in a SET list",
        "undeclared insert",
    ]


def test_no_statement_of_the_store_writes_a_status_undeclared() -> None:
    undeclared = _undeclared(_store_strings(), [sql for _, sql in _declared()])
    assert undeclared == [], "status written outside app/store/transitions.guarded()"


def test_the_store_writes_no_status_through_the_orm() -> None:
    """`update(Job).values(status=...)` and friends would escape the SQL checks above."""
    offenders = []
    for path in sorted(STORE.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name in {"values", "update", "insert", "Job"} and any(
                keyword.arg == "status" for keyword in node.keywords
            ):
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert offenders == []


def test_the_statuses_services_finish_with_are_moves_of_the_table() -> None:
    """`claims.finish(session, lease, JobStatus.X, ...)` in a service: X must be a status the
    fenced finish may leave a job in (bind_target refuses others at run time, too)."""
    used = set()
    for path in sorted(SERVICES.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "finish"
                and len(node.args) >= 3
                and isinstance(node.args[2], ast.Attribute)
            ):
                used.add(JobStatus[node.args[2].attr])
    assert used, "the services finish attempts through claims.finish"
    assert used <= FINISH.targets


# --- the document -------------------------------------------------------------------------


def test_the_architecture_document_holds_the_diagram_of_the_table() -> None:
    document = (ROOT / "docs" / "ARCHITECTURE.md").read_text()
    section = document.split("## Job states", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```mermaid\n.*?\n```", section, re.DOTALL)
    assert blocks == [states.mermaid()], "regenerate it: python -m app.domain.states"
    # Every status but completed names what moves a job out of it.
    for status in JobStatus:
        arrows = [m for m in MOVES if m.source is status]
        assert bool(arrows) == (status is not JobStatus.COMPLETED)
        assert all(m.why for m in arrows)


def test_the_module_prints_the_diagram() -> None:
    printed = subprocess.run(
        [sys.executable, "-m", "app.domain.states"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout
    assert printed == states.mermaid() + "\n"
