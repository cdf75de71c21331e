"""The ASGI app of `runner serve`: FastAPI, one router per resource under /api/v1.

    app = create_app(service)     # a runner.server.service.Service, started or not

Every route but `/api/v1/health`, `/openapi.json`, `/docs` and the webhooks needs
`Authorization: Bearer TOKEN` (a token of `runner token create`); without one it answers
401. Every error is JSON `{"error": "...", "details": [...]}` with its status: 400 a bad
request, 401 no valid token, 404 nothing by that name, 409 not in a state that allows it,
422 a flow or inputs that do not validate, 503 the database or engine is down or the server
is shutting down; 500 (never with a traceback) for a bug, which is logged.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.exceptions import HTTPException as StarletteHTTPException

from runner import api
from runner.errors import (
    BackendError,
    ConflictError,
    FlowError,
    InputError,
    NotFoundError,
    RunnerError,
    StoreError,
    UnavailableError,
    UsageError,
)
from runner.logs import module_logger
from runner.server.routes import artifacts, backfills, executions, flows, health, logs, webhooks
from runner.server.service import Service
from runner.server.ui import UI_PREFIX, create_ui, session

__all__ = ["API_PREFIX", "PUBLIC_PATHS", "create_app"]

API_PREFIX = "/api/v1"

PUBLIC_PATHS = frozenset(
    {f"{API_PREFIX}/health", "/openapi.json", "/docs", "/docs/oauth2-redirect"}
)
"""Routes that answer without a token (webhooks too: their key is their secret)."""

log = module_logger("runner")

_bearer = HTTPBearer(auto_error=False, description="A token of `runner token create`.")


class _Unauthorized(Exception):
    pass


def require_token(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> str:
    """The name of the token the request carries; 401 without a valid one. The web UI's
    session cookie holds a token too; a request it authenticates that changes something
    must carry its page's CSRF token (403 without), see runner.server.ui.session."""
    service: Service = request.app.state.service
    from_cookie = credentials is None and session.cookie_of(request) is not None
    presented = credentials.credentials if credentials is not None else session.cookie_of(request)
    if presented is None:
        raise _Unauthorized("missing token: send `Authorization: Bearer TOKEN`")
    name = api.verify_token(service.store, presented)
    if name is None:
        raise _Unauthorized("invalid token (unknown or revoked)")
    if from_cookie:
        try:
            session.check_csrf(request, presented)
        except session.CsrfError as exc:
            raise StarletteHTTPException(403, str(exc)) from None
    return name


def create_app(service: Service) -> FastAPI:
    """The app serving `service`; its routes call `runner.api` with what `service` holds."""
    app = FastAPI(
        title="runner",
        summary="Run YAML flows of containers: executions, logs, artifacts, triggers.",
        version=_version(),
        openapi_url="/openapi.json",
        docs_url=None,  # served below, from the runner's own copy of Swagger UI
        redoc_url=None,
    )
    app.state.service = service
    secured = [Depends(require_token)]
    app.include_router(health.router, prefix=API_PREFIX)
    app.include_router(webhooks.router, prefix=API_PREFIX)
    for module in (flows, executions, logs, artifacts, backfills):
        app.include_router(module.router, prefix=API_PREFIX, dependencies=secured)
    app.mount(UI_PREFIX, create_ui(service))
    app.add_route("/", _to_ui, include_in_schema=False)
    app.add_route("/docs", _docs, include_in_schema=False)
    _install_error_handlers(app)
    app.add_middleware(_Guard)
    return app


def _docs(request: Request) -> HTMLResponse:
    """The interactive API page, its script and style sheet served by the runner (FastAPI's
    default page loads them from a CDN, which a machine without internet cannot reach)."""
    vendor = f"{UI_PREFIX}/static/vendor"
    return get_swagger_ui_html(
        openapi_url="/openapi.json",
        title="runner API",
        swagger_js_url=f"{vendor}/swagger-ui-bundle.js",
        swagger_css_url=f"{vendor}/swagger-ui.css",
        swagger_favicon_url=f"{UI_PREFIX}/static/favicon.svg",
    )


def _to_ui(request: Request) -> RedirectResponse:
    return RedirectResponse(f"{UI_PREFIX}/flows", 303)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("runner")
    except PackageNotFoundError:
        return "0"


# -- errors as JSON ------------------------------------------------------------------------------


def error_response(
    status: int, error: str, details: list[Any] | None = None, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse({"error": error, "details": details or []}, status, headers=headers)


def _status_of(exc: RunnerError) -> int:
    """The HTTP status of one of runner's errors (most specific first)."""
    if isinstance(exc, FlowError | InputError):
        return 422
    if isinstance(exc, ConflictError):
        return 409
    if isinstance(exc, NotFoundError):
        return 404
    if isinstance(exc, UnavailableError | StoreError | BackendError):
        return 503
    if isinstance(exc, UsageError):
        return 400
    return 400 if exc.exit_code == 2 else 500


def _details_of(exc: RunnerError) -> list[Any]:
    if isinstance(exc, FlowError):
        return [problem_json(p) for p in exc.problems]
    if isinstance(exc, InputError):
        return str(exc).splitlines()
    return []


def problem_json(problem: Any) -> dict[str, Any]:
    return {
        "file": problem.file,
        "line": problem.line,
        "column": problem.column,
        "field": problem.field,
        "message": problem.message,
        "text": str(problem),
    }


def _install_error_handlers(app: FastAPI) -> None:
    async def on_runner_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RunnerError)
        status = _status_of(exc)
        if status >= 500:
            log.warning("request_failed", path=request.url.path, status=status, error=str(exc))
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        error = "the flow is not valid" if isinstance(exc, FlowError) else first
        if isinstance(exc, InputError):
            error = "the inputs are not valid"
        return error_response(status, error, _details_of(exc))

    async def on_unauthorized(request: Request, exc: Exception) -> JSONResponse:
        return error_response(401, str(exc), headers={"WWW-Authenticate": 'Bearer realm="runner"'})

    async def on_validation(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        details = [
            {
                "loc": [str(part) for part in error.get("loc", ())],
                "message": error.get("msg", ""),
            }
            for error in exc.errors()
        ]
        return error_response(422, "the request is not valid", details)

    async def on_http(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        detail = exc.detail if isinstance(exc.detail, str) else "error"
        if exc.status_code == 404 and detail == "Not Found":
            detail = f"no such route: {request.method} {request.url.path}"
        return error_response(exc.status_code, detail, headers=getattr(exc, "headers", None))

    app.add_exception_handler(RunnerError, on_runner_error)
    app.add_exception_handler(_Unauthorized, on_unauthorized)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)


# -- what no handler caught, and the log of requests ---------------------------------------

_Scope = MutableMapping[str, Any]
_Message = MutableMapping[str, Any]
_Receive = Callable[[], Awaitable[_Message]]
_Send = Callable[[_Message], Awaitable[None]]
_App = Callable[[_Scope, _Receive, _Send], Awaitable[None]]


class _Guard:
    """Logs each request (`http_request` with method, path, status, duration) and turns
    an exception no handler took into a 500 JSON answer: the client never sees a
    traceback, the server's log has it."""

    def __init__(self, app: _App) -> None:
        self.app = app

    async def __call__(self, scope: _Scope, receive: _Receive, send: _Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.monotonic()
        status = 0

        async def sending(message: _Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, sending)
        except Exception as exc:
            log.exception("request_crashed", method=scope["method"], path=scope["path"])
            if status:  # the answer has started: nothing more can be said
                return
            status = 500
            response = error_response(500, f"internal error: {type(exc).__name__}")
            await response(scope, receive, send)
        finally:
            if scope["path"] != f"{API_PREFIX}/health":
                log.info(
                    "http_request",
                    method=scope["method"],
                    path=scope["path"],
                    status=status,
                    duration_ms=round((time.monotonic() - started) * 1000, 1),
                )
