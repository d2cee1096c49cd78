"""Values Postgres can store, checked before they reach it. Pure functions, no I/O.

Python and its JSON parser accept values that Postgres (or our JSON encoder) refuses: integers
of any size, NaN and infinities, strings holding NUL or half of a UTF-16 surrogate pair, nesting
as deep as the stack allows, and UTC offsets up to 23:59. Each check below turns such a value
into a validation error that names the field, instead of a failed statement.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import AfterValidator, AwareDatetime, BeforeValidator, JsonValue
from pydantic_core import PydanticCustomError

# Nesting of a stored JSON document (payload, result): [] is one level, [[]] two.
MAX_JSON_DEPTH = 64
# A signed 64-bit integer: the widest that client JSON libraries commonly read (Go, Java, .NET).
INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
# Postgres int columns.
INT32_MAX = 2**31 - 1


def text_problem(value: str) -> PydanticCustomError | None:
    """Why Postgres text cannot hold `value`, or None."""
    if "\x00" in value:
        return PydanticCustomError(
            "string_nul", "the text holds a NUL character (\\u0000); Postgres refuses it"
        )
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return PydanticCustomError(
            "string_surrogate",
            "the text holds a lone UTF-16 surrogate (\\ud800-\\udfff); it is not valid Unicode",
        )
    return None


def _where(path: list[Any]) -> str:
    """A short, readable path inside a document: `.items[3].name` (long paths and keys cut)."""
    shown = "".join(
        f"[{part}]" if isinstance(part, int) else f".{str(part)[:40]}" for part in path[:8]
    )
    return shown + ("..." if len(path) > 8 else "")


def _node_problem(node: Any, depth: int) -> tuple[str, str] | None:
    """(type, message) when this one node cannot be stored."""
    if isinstance(node, dict | list):
        if depth > MAX_JSON_DEPTH:
            return "json_too_deep", f"nested deeper than {MAX_JSON_DEPTH} levels"
    elif isinstance(node, bool):
        return None
    elif isinstance(node, int):
        if not INT64_MIN <= node <= INT64_MAX:
            return "int_out_of_range", "an integer outside the signed 64-bit range"
    elif isinstance(node, float):
        if not math.isfinite(node):
            return "float_not_finite", "NaN or an infinity, which JSON cannot hold"
        if not INT64_MIN <= node <= INT64_MAX:
            # jsonb keeps 1e19 as the exact number 10000000000000000000, which comes back as an
            # integer outside the range: refused here rather than when the value is read back.
            return "int_out_of_range", "a number outside the signed 64-bit range"
    elif isinstance(node, str):
        problem = text_problem(node)
        if problem is not None:
            return problem.type, problem.message()
    return None


def json_problem(document: Any) -> PydanticCustomError | None:
    """Why Postgres jsonb (or a client's JSON parser) cannot hold `document`, or None.

    Walks the document without recursion, so no nesting can exhaust the stack. A quick walk
    answers for the common, storable document; only a refused one is walked again to say
    where inside it the first refused value sits.
    """
    return None if _storable(document) else _locate(document)


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _storable(document: Any) -> bool:
    """True when every value is storable; False when one is not, or one is of a type this
    walk does not know (then _locate decides). The hot path of every submit: kept lean."""
    stack: list[tuple[Any, int]] = [([document], 0)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            return False
        if type(node) is dict:
            for key in node:
                if type(key) is not str or "\x00" in key or not (key.isascii() or _utf8(key)):
                    return False
            values: Any = node.values()
        else:
            values = node
        for value in values:
            kind = type(value)
            if kind is str:
                if "\x00" in value or not (value.isascii() or _utf8(value)):
                    return False
            elif kind is int:
                if not INT64_MIN <= value <= INT64_MAX:
                    return False
            elif kind is dict or kind is list:
                stack.append((value, depth + 1))
            elif kind is float:
                if not (math.isfinite(value) and INT64_MIN <= value <= INT64_MAX):
                    return False
            elif kind is not bool and value is not None:
                return False
    return True


def _locate(document: Any) -> PydanticCustomError | None:
    # Each entry: a node, its depth, and its path as a chain of (parent chain, key) pairs,
    # turned into a readable path only when something is wrong.
    stack: list[tuple[Any, int, Any]] = [(document, 1, None)]
    while stack:
        node, depth, chain = stack.pop()
        found = _node_problem(node, depth)
        if found is None and isinstance(node, dict):
            for key, value in node.items():
                if isinstance(key, str) and (problem := text_problem(key)) is not None:
                    found = (problem.type, f"a key: {problem.message()}")
                    break
                stack.append((value, depth + 1, (chain, key)))
        elif found is None and isinstance(node, list):
            stack.extend((value, depth + 1, (chain, i)) for i, value in enumerate(node))
        if found is not None:
            path: list[Any] = []
            while chain is not None:
                chain, part = chain
                path.append(part)
            kind, message = found
            if path:
                message = f"at {_where(path[::-1])}: {message}"
            return PydanticCustomError(kind, "{message}", {"message": message})
    return None


def _storable_json(document: Any) -> Any:
    problem = json_problem(document)
    if problem is not None:
        raise problem
    return document


def _storable_text(value: str) -> str:
    problem = text_problem(value)
    if problem is not None:
        raise problem
    return value


def _utc(value: datetime) -> datetime:
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise PydanticCustomError(
            "datetime_out_of_range", "the time in UTC falls outside the years 1 to 9999"
        ) from None


# A JSON document Jobfleet stores (a payload, a result). Checked before pydantic's own
# validation walks it, so a deep document is refused before anything recurses into it.
StoredJson = Annotated[JsonValue, BeforeValidator(_storable_json)]
# Free text stored in a Postgres text column.
StoredText = Annotated[str, AfterValidator(_storable_text)]
# A timestamp with an offset, as UTC: Postgres refuses offsets beyond 15:59, Python's go to 23:59.
UtcDatetime = Annotated[AwareDatetime, AfterValidator(_utc)]
