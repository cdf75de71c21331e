"""Who a browser is: the session cookie of the web UI, and its protection against
cross-site requests. Pure functions of a request; the token check itself is
`runner.api.verify_token`.

    token = presented_token(request)        # Bearer header first, else the session cookie
    csrf_token(token)                       # what a page puts in its forms and headers
    check_csrf(request, token)              # 403 on an unsafe request without it

The cookie holds the API token itself (HttpOnly: page scripts never read it;
SameSite=Strict: other sites' pages never send it; Secure over HTTPS). So a session is
exactly as valid as its token: `runner token revoke` ends it at once, on every server
sharing the database, and no session table is needed.

A request authenticated by the cookie that changes something must also carry the CSRF
token of its session, in the `X-CSRF-Token` header (scripts) or a `csrf` form field
(the logout form): an HMAC of a constant keyed by the API token, so only a page the
server rendered for that session knows it. SameSite=Strict already keeps the cookie
off cross-site requests in current browsers; the token also covers older ones and
same-site pages on other ports. A Bearer header is not sent by browsers on their own,
so requests carrying one need no CSRF token.
"""

from __future__ import annotations

import hashlib
import hmac

from starlette.requests import Request

__all__ = [
    "COOKIE",
    "CSRF_FIELD",
    "CSRF_HEADER",
    "SAFE_METHODS",
    "CsrfError",
    "bearer_of",
    "check_csrf",
    "cookie_of",
    "csrf_matches",
    "csrf_token",
    "presented_token",
]

COOKIE = "runner_session"
CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "csrf"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_CSRF_PURPOSE = b"runner-ui-csrf-v1"


class CsrfError(Exception):
    """An unsafe request authenticated by the session cookie without its CSRF token."""


def bearer_of(request: Request) -> str | None:
    """The token of an `Authorization: Bearer TOKEN` header, if any."""
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


def cookie_of(request: Request) -> str | None:
    value = request.cookies.get(COOKIE, "").strip()
    return value or None


def presented_token(request: Request) -> tuple[str | None, bool]:
    """The token the request carries and whether it came from the session cookie."""
    bearer = bearer_of(request)
    if bearer is not None:
        return bearer, False
    cookie = cookie_of(request)
    return cookie, cookie is not None


def csrf_token(token: str) -> str:
    """The CSRF token of the session whose API token is `token`."""
    return hmac.new(token.encode(), _CSRF_PURPOSE, hashlib.sha256).hexdigest()


def csrf_matches(token: str, presented: str | None) -> bool:
    return presented is not None and hmac.compare_digest(csrf_token(token), presented)


def check_csrf(request: Request, token: str) -> None:
    """Raise CsrfError if `request` changes something without the session's CSRF token
    (for a request authenticated by the cookie `token`)."""
    if request.method in SAFE_METHODS:
        return
    if not csrf_matches(token, request.headers.get(CSRF_HEADER)):
        raise CsrfError(
            f"missing or wrong {CSRF_HEADER} header: a request authenticated by the session"
            " cookie that changes something must carry the CSRF token of its page"
        )
