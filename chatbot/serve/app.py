"""The FastAPI app: the API routes, the web page, the key check, CORS and error bodies.

Built by `create_app` (no app at import time). The API key is checked by a small ASGI
middleware before anything reads the body, so a client without the key learns nothing, not
even whether its JSON was valid; the page and /health need no key.
"""

import secrets
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

from chatbot.errors import ChatbotError
from chatbot.serve import responses
from chatbot.serve.limiter import Limiter, QueueFull
from chatbot.serve.models import ApiError
from chatbot.serve.routes import CONVERSATION_HEADER, ServeState, router
from chatbot.serve.settings import ServeSettings
from chatbot.serve.turns import Backend

STATIC = Path(__file__).parent / "static"
# The page loads nothing but its own files and talks to nothing but this server; the reply is
# put into the page as text (textContent), and this policy also forbids inline scripts.
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; "
    "img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; "
    "form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


class ApiKeyMiddleware:
    """401 for /v1/ requests without `Authorization: Bearer KEY` (constant-time comparison)."""

    def __init__(self, app: ASGIApp, key: str):
        self.app = app
        self.key = key.encode("utf-8")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        guarded = scope["type"] == "http" and scope["path"].startswith("/v1/")
        if guarded and scope["method"] != "OPTIONS" and not self._allowed(scope):
            error = ApiError(401, "missing or wrong API key: send Authorization: Bearer KEY")
            headers = {"WWW-Authenticate": "Bearer"}
            await JSONResponse(error.body(), 401, headers)(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def _allowed(self, scope: Scope) -> bool:
        header = dict(scope["headers"]).get(b"authorization", b"")
        scheme, _, given = header.partition(b" ")
        return scheme.lower() == b"bearer" and secrets.compare_digest(given.strip(), self.key)


def create_app(backend: Backend, settings: ServeSettings) -> FastAPI:
    """The app serving `backend` with these settings (already checked)."""
    app = FastAPI(title="chatbot", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.serve = ServeState(backend, settings, Limiter(settings.parallel, settings.queue))
    app.include_router(router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers=PAGE_HEADERS)

    _add_error_handlers(app)
    if settings.api_key is not None:
        app.add_middleware(ApiKeyMiddleware, key=settings.api_key)
    if settings.cors_origins:  # outside the key check, so a browser can read a 401 too
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origins),
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type", CONVERSATION_HEADER],
            expose_headers=[CONVERSATION_HEADER, "Retry-After"],
        )
    return app


def _add_error_handlers(app: FastAPI) -> None:
    """Every error in OpenAI's shape; 503 with Retry-After when the queue is full."""

    @app.exception_handler(ApiError)
    async def api_error(_request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(exc.body(), exc.status, exc.headers)

    @app.exception_handler(QueueFull)
    async def queue_full(_request: Request, exc: QueueFull) -> JSONResponse:
        error = ApiError(503, f"{exc}; all {_slots(app)} places are taken")
        return JSONResponse(error.body(), 503, {"Retry-After": str(exc.retry_after)})

    @app.exception_handler(ChatbotError)
    async def chatbot_error(_request: Request, exc: ChatbotError) -> JSONResponse:
        error = responses.api_error_for(exc)
        return JSONResponse(error.body(), error.status)


def _slots(app: FastAPI) -> int:
    limiter = app.state.serve.limiter
    return limiter.parallel + limiter.queue
