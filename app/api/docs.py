"""/docs (Swagger UI) and /redoc, served with their scripts and styles from the API itself.

FastAPI's own pages load them from a CDN and stay blank on a network without internet access.
The files come from the pinned fastapi-offline package, which ships Swagger UI 5 (the first
major version that renders OpenAPI 3.1) and ReDoc 2.
"""

from __future__ import annotations

from pathlib import Path

import fastapi_offline
from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.staticfiles import StaticFiles
from starlette.responses import HTMLResponse

ASSETS = "/docs/assets"
_FILES = Path(fastapi_offline.__file__).parent / "static"


def install(app: FastAPI) -> None:
    """Mount the assets and add both pages; the app must be built with docs_url=None and
    redoc_url=None so that FastAPI's CDN pages are not there too."""
    app.mount(ASSETS, StaticFiles(directory=_FILES), name="docs-assets")
    openapi_url = app.openapi_url or "/openapi.json"

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_swagger_ui_html(
            openapi_url=root + openapi_url,
            title=f"{app.title} - Swagger UI",
            swagger_js_url=f"{root}{ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{root}{ASSETS}/favicon.png",
            oauth2_redirect_url=None,
            # No call to the public online validator: the page must not leave the API.
            swagger_ui_parameters={"validatorUrl": None},
        )

    @app.get("/redoc", include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_redoc_html(
            openapi_url=root + openapi_url,
            title=f"{app.title} - ReDoc",
            redoc_js_url=f"{root}{ASSETS}/redoc.standalone.js",
            redoc_favicon_url=f"{root}{ASSETS}/favicon.png",
            with_google_fonts=False,
        )
