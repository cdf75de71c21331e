"""The pages of the web UI under /ui: HTML shells whose scripts do the rest through the
HTTP API, so that anything the UI does a script can do.

    /ui/login                                    a form taking an API token (sets the cookie)
    /ui/logout                                   POST: forget the cookie
    /ui/flows                                    every flow, its triggers, a pause switch
    /ui/flows/{namespace}/{flow_id}              source, DAG, executions, a run form
    /ui/executions                               the list, filters in the URL, bulk actions
    /ui/executions/{execution_id}                header, DAG, timeline, live logs, actions
    /ui/static/...                               CSS, scripts, vendored libraries

A page needs a valid token, from `Authorization: Bearer TOKEN` or the session cookie;
without one it sends the browser to /ui/login (which comes back to the page after).
Pages read nothing from the store themselves but the token: their scripts call /api/v1
with the cookie (and the page's CSRF token for requests that change something).
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from anyio import to_thread
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import Receive, Scope, Send

from runner import api
from runner.server.service import Service
from runner.server.ui import session

__all__ = ["UI_PREFIX", "create_ui"]

UI_PREFIX = "/ui"
HERE = Path(__file__).parent
STATIC_DIR = HERE / "static"
TEMPLATES_DIR = HERE / "templates"

_LOGIN_NONCE = "runner_login"
"""Cookie of the login form's own CSRF check (double submit): a page of another site
cannot log a browser in with the attacker's token."""

SECURITY_HEADERS = {
    # Every script and style sheet is a file of /ui/static: no inline code, nothing from
    # elsewhere. Style attributes are allowed: the timeline places its bars with them.
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; style-src-attr 'unsafe-inline';"
        " img-src 'self' data:;"
        " connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self';"
        " frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",  # a page holds its session's CSRF token
}

_templates = Environment(
    loader=FileSystemLoader(TEMPLATES_DIR),
    autoescape=select_autoescape(("html",)),
    trim_blocks=True,
    lstrip_blocks=True,
)


def create_ui(service: Service) -> Starlette:
    """The UI as an ASGI app to mount at /ui of the server's app."""
    routes = [
        Route("/", _home),
        Route("/login", _login_form, methods=["GET"]),
        Route("/login", _login, methods=["POST"]),
        Route("/logout", _logout, methods=["POST"]),
        Route("/flows", _page("flows", "Flows")),
        Route("/flows/{namespace}/{flow_id}", _page("flow", "Flow")),
        Route("/executions", _page("executions", "Executions")),
        Route("/executions/{execution_id}", _page("execution", "Execution")),
        Mount("/static", app=_Static(directory=STATIC_DIR), name="static"),
    ]
    ui = Starlette(routes=routes)
    ui.state.service = service
    return ui


class _Static(StaticFiles):
    """Static files, revalidated on every use (a 304 when unchanged): a new version of
    the runner is seen at once, with no hashed file names to build."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def sending(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers.append((b"cache-control", b"no-cache"))
                headers.append((b"x-content-type-options", b"nosniff"))
                message = {**message, "headers": headers}
            await send(message)

        await super().__call__(scope, receive, sending)  # type: ignore[arg-type]


# -- who is asking -----------------------------------------------------------------------


def _service(request: Request) -> Service:
    service: Service = request.app.state.service
    return service


def _authenticated(request: Request) -> str | None:
    """The valid API token the request carries (header or cookie), or None."""
    token, _ = session.presented_token(request)
    if token is None or api.verify_token(_service(request).store, token) is None:
        return None
    return token


def _base(request: Request) -> str:
    """Where the UI is mounted, as the browser sees it (`/ui`, or behind a proxy's prefix)."""
    return str(request.scope.get("root_path", "")).rstrip("/") or UI_PREFIX


def _to_login(request: Request) -> RedirectResponse:
    here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse(f"{_base(request)}/login?{urlencode({'next': here})}", 303)


def _safe_next(request: Request, wanted: str | None) -> str:
    """Where to go after logging in: a page of this UI only (no open redirect)."""
    base = _base(request)
    if wanted is None or "\\" in wanted or any(ord(c) < 32 for c in wanted):
        return f"{base}/flows"
    if not wanted.startswith(f"{base}/") or wanted.startswith("//"):
        return f"{base}/flows"
    return wanted


# -- pages ----------------------------------------------------------------------------------


def _render(request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
    base = _base(request)
    api_base = base[: -len(UI_PREFIX)] + "/api/v1" if base.endswith(UI_PREFIX) else "/api/v1"
    html = _templates.get_template(template).render(
        base=base,
        root=api_base.removesuffix("/api/v1"),
        static=f"{base}/static",
        api=api_base,
        **context,
    )
    return HTMLResponse(html, status, headers=SECURITY_HEADERS)


def _home(request: Request) -> Response:
    return RedirectResponse(f"{_base(request)}/flows", 303)


def _page(name: str, title: str) -> Any:
    """The endpoint of one page: its shell, with what its script needs as data-*."""

    def endpoint(request: Request) -> Response:
        token = _authenticated(request)
        if token is None:
            return _to_login(request)
        params = {key: str(value) for key, value in request.path_params.items()}
        return _render(
            request,
            f"{name}.html",
            page=name,
            title=title,
            csrf=session.csrf_token(token),
            params=params,
        )

    endpoint.__name__ = f"page_{name}"
    return endpoint


def _login_form(request: Request) -> Response:
    wanted = request.query_params.get("next")
    if _authenticated(request) is not None:
        return RedirectResponse(_safe_next(request, wanted), 303)
    return _login_page(request, wanted)


def _login_page(
    request: Request, wanted: str | None, error: str | None = None, status: int = 200
) -> Response:
    nonce = secrets.token_urlsafe(24)
    response = _render(
        request,
        "login.html",
        status,
        page="login",
        title="Log in",
        nonce=nonce,
        next=_safe_next(request, wanted),
        error=error,
    )
    response.set_cookie(
        _LOGIN_NONCE,
        nonce,
        path=f"{_base(request)}/login",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return response


async def _login(request: Request) -> Response:
    async with request.form(max_files=0, max_fields=10) as form:
        token = str(form.get("token", "")).strip()
        wanted = str(form.get("next", "")) or None
        nonce = str(form.get("nonce", ""))
    expected = request.cookies.get(_LOGIN_NONCE, "")
    if not nonce or not secrets.compare_digest(nonce, expected):
        return _login_page(
            request, wanted, "this form has expired or came from another site: try again", 400
        )
    if not token:
        return _login_page(request, wanted, "give an API token (`runner token create NAME`)", 400)
    store = _service(request).store
    name = await to_thread.run_sync(api.verify_token, store, token)
    if name is None:
        return _login_page(request, wanted, "invalid token (unknown or revoked)", 401)
    response = RedirectResponse(_safe_next(request, wanted), 303)
    response.set_cookie(
        session.COOKIE,
        token,
        path="/",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    response.delete_cookie(_LOGIN_NONCE, path=f"{_base(request)}/login")
    return response


async def _logout(request: Request) -> Response:
    async with request.form(max_files=0, max_fields=10) as form:
        presented = str(form.get(session.CSRF_FIELD, ""))
    token = session.cookie_of(request)
    if token is not None and not session.csrf_matches(token, presented):
        return HTMLResponse("wrong or missing CSRF token", 403, headers=SECURITY_HEADERS)
    response = RedirectResponse(f"{_base(request)}/login", 303)
    response.delete_cookie(session.COOKIE, path="/", httponly=True, samesite="strict")
    return response
