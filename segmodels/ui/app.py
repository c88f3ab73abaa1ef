"""The FastAPI application of ``segmodels ui`` and the command that serves it on 127.0.0.1."""

from __future__ import annotations

import os
import socket
import sys
import webbrowser
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from mlflow.tracking import MlflowClient

from segmodels.ui.lakefs_reader import BadInput, LakeFSReader, NotFound
from segmodels.ui.thumbnails import ThumbnailCache, cache_root

HERE = Path(__file__).resolve().parent
templates = Jinja2Templates(directory=str(HERE / "templates"))


def create_app(
    reader: LakeFSReader, client: MlflowClient | None = None, cache: ThumbnailCache | None = None
) -> FastAPI:
    """The browser over ``reader``'s lakeFS and ``client``'s MLflow store (default: the current tracking URI)."""
    from segmodels.ui import views

    app = FastAPI(title="segmodels ui", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.reader = reader
    app.state.client = client or MlflowClient()
    app.state.cache = cache or ThumbnailCache(cache_root())
    app.state.datasets = {}  # (repo, commit id, prefix) -> DatasetInfo | None, commits are immutable
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")
    app.include_router(views.router)

    @app.exception_handler(NotFound)
    async def not_found(request: Request, error: NotFound) -> HTMLResponse:
        return error_page(request, 404, str(error))

    @app.exception_handler(BadInput)
    async def bad_input(request: Request, error: BadInput) -> HTMLResponse:
        return error_page(request, 400, str(error))

    @app.exception_handler(RequestValidationError)
    async def bad_parameter(request: Request, error: RequestValidationError) -> HTMLResponse:
        first = error.errors()[0] if error.errors() else {}
        where = ".".join(str(part) for part in first.get("loc", ())[1:]) or "request"
        return error_page(request, 400, f"{where}: {first.get('msg', 'invalid')}")

    return app


def error_page(request: Request, status: int, message: str) -> HTMLResponse:
    from segmodels.redaction import redact_text

    text = redact_text(message).splitlines()[0] if message else ""
    return templates.TemplateResponse(
        request, "error.html", {"status": status, "message": text[:300]}, status_code=status
    )


def serve(host: str = "127.0.0.1", port: int = 8765, open_browser: bool = False) -> None:
    """Serve the UI until interrupted, printing its URL (``port`` 0: a free one)."""
    import uvicorn

    from segmodels.ui.lakefs_reader import open_reader

    try:
        listener = socket.create_server((host, port))
    except OSError as error:
        reason = os.strerror(error.errno) if error.errno else str(error)
        print(f"segmodels ui: error: cannot listen on {host}:{port}: {reason}", file=sys.stderr)
        raise SystemExit(1) from None
    bound_host, bound_port = listener.getsockname()[:2]
    url = f"http://{'127.0.0.1' if bound_host in ('0.0.0.0', '') else bound_host}:{bound_port}/"
    app = create_app(open_reader())
    print(f"segmodels ui on {url} (Ctrl-C stops it)", flush=True)
    if open_browser:
        webbrowser.open(url)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    server.run(sockets=[listener])
