"""The checks of values Postgres can store, as pure functions."""

from __future__ import annotations

from typing import Any

import pytest

from app.domain.values import MAX_JSON_DEPTH, json_problem, text_problem


def nested(depth: int) -> Any:
    document: Any = 1
    for _ in range(depth):
        document = [document]
    return document


@pytest.mark.parametrize(
    "document",
    [
        None, True, 0, -(2**63), 2**63 - 1, 1.5, "", "caf\u00e9 \U0001f600",
        {"a": [1, {"b": None}]}, nested(MAX_JSON_DEPTH), {"k" * 1000: "v"},
    ],
)  # fmt: skip
def test_storable_documents_pass(document: Any) -> None:
    assert json_problem(document) is None


@pytest.mark.parametrize(
    ("document", "kind", "where"),
    [
        (2**63, "int_out_of_range", None),
        ({"a": [0, -(2**63) - 1]}, "int_out_of_range", "at .a[1]"),
        ([float("nan")], "float_not_finite", "at [0]"),
        ({"x": float("-inf")}, "float_not_finite", "at .x"),
        ({"a": {"b": "x\x00"}}, "string_nul", "at .a.b"),
        ({"a": {"\x00": 1}}, "string_nul", "at .a"),
        (["\udfff"], "string_surrogate", "at [0]"),
        ({"\ud800x": 1}, "string_surrogate", None),
        (nested(MAX_JSON_DEPTH + 1), "json_too_deep", "at [0][0]"),
        ({"deep": nested(MAX_JSON_DEPTH)}, "json_too_deep", "at .deep"),
        (nested(100_000), "json_too_deep", None),  # no recursion, no stack to exhaust
    ],
)
def test_unstorable_documents_say_what_and_where(
    document: Any, kind: str, where: str | None
) -> None:
    problem = json_problem(document)
    assert problem is not None
    assert problem.type == kind
    if where is not None:
        assert problem.message().startswith(where), problem.message()


def test_text_problems() -> None:
    assert text_problem("plain caf\u00e9") is None
    nul, surrogate = text_problem("a\x00"), text_problem("\ud800")
    assert nul is not None and nul.type == "string_nul"
    assert surrogate is not None and surrogate.type == "string_surrogate"
