"""Request bodies: every body that is not JSON answers 422 with `loc: ["body"]`.

FastAPI turns a JSON syntax error into a 422 but any other failure of the parser into a 400:
a body too deeply nested for Python's recursion limit, or bytes that are not UTF-8. Routes of
this class report all three the same way, as a JSON decode error.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute


def parse_json(body: bytes) -> Any:
    """The JSON document of a body; json.JSONDecodeError for anything that is not one."""
    try:
        return json.loads(body)
    except json.JSONDecodeError:
        raise
    except RecursionError:
        raise json.JSONDecodeError("nested too deeply to parse", "", 0) from None
    except UnicodeDecodeError as exc:
        raise json.JSONDecodeError("the body is not UTF-8 text", "", exc.start) from None


class JsonRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = parse_json(await self.body())
        return self._json


class JsonRoute(APIRoute):
    """An APIRoute whose requests parse their JSON body with `parse_json`."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handle = super().get_route_handler()

        async def handler(request: Request) -> Response:
            return await handle(JsonRequest(request.scope, request.receive))

        return handler
