"""API tokens: made once, shown once, stored only as a SHA-256 digest.

    secret, record = new_token("ci", now=...)   # print `secret` once; store `record`
    token_digest(presented)                     # the key to look the record up by
    verify_token(presented, record)             # True if `presented` is that token

A token is `rnr_` and 43 URL-safe characters from `secrets.token_urlsafe(32)`: 256
random bits. The prefix makes a leaked token recognisable (in logs, by secret scanners)
and lets a request with something else in its header be refused without a lookup.

Why SHA-256 and not bcrypt (or argon2): those are slow on purpose, to make guessing a
person's low-entropy password from its hash expensive. Nobody can guess 256 random bits,
fast hash or slow, so a slow hash would only cost every API request tens of milliseconds
of CPU (a cheap way to overload the server) and, being salted, would rule out finding a
token by its digest: each request would have to try every stored token. An unsalted
SHA-256 digest is the lookup key and reveals nothing usable if the table leaks.

Pure functions and a frozen record; storing records is the store's job.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime

__all__ = [
    "TOKEN_PREFIX",
    "ApiToken",
    "bearer_token",
    "check_token_name",
    "looks_like_token",
    "new_token",
    "token_digest",
    "verify_token",
]

TOKEN_PREFIX = "rnr_"
_RANDOM_BYTES = 32  # 256 bits; token_urlsafe writes them as 43 characters
_TOKEN = re.compile(rf"^{TOKEN_PREFIX}[A-Za-z0-9_-]{{43}}$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_MAX_NAME = 100
_SHOWN = 4
"""Characters of the random part kept in `ApiToken.shown`, so `runner token list` can
tell tokens apart: 24 of 256 bits, which leaves nothing to guess from."""


@dataclass(frozen=True)
class ApiToken:
    """What is stored of a token: never the token itself."""

    name: str
    digest: str
    """SHA-256 of the whole token, 64 hex digits: the key a token is looked up by."""
    shown: str
    """The prefix and first characters (`rnr_Ab3x…`), to recognise the token by."""
    created_at: datetime


def check_token_name(name: str) -> str:
    """`name`, or ValueError saying what a token name may be."""
    if not _NAME.match(name) or len(name) > _MAX_NAME:
        shown = name if len(name) <= 40 else name[:37] + "..."
        raise ValueError(
            f"token name {shown!r} is not valid: use letters, digits, '.', '_' and '-',"
            f" starting with a letter or a digit, at most {_MAX_NAME} characters"
        )
    return name


def new_token(name: str, *, now: datetime) -> tuple[str, ApiToken]:
    """A new token named `name`: the secret to show once, and the record to store."""
    check_token_name(name)
    token = TOKEN_PREFIX + secrets.token_urlsafe(_RANDOM_BYTES)
    shown = token[: len(TOKEN_PREFIX) + _SHOWN] + "…"
    return token, ApiToken(name=name, digest=token_digest(token), shown=shown, created_at=now)


def token_digest(token: str) -> str:
    """The SHA-256 digest of `token` in hex: store it, and look tokens up by it."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def looks_like_token(text: str) -> bool:
    """Whether `text` has the shape of a token (prefix, length, alphabet)."""
    return bool(_TOKEN.match(text))


def verify_token(presented: str, record: ApiToken) -> bool:
    """Whether `presented` is the token `record` was made for, in constant time."""
    # Compared as digests: equal length whatever was presented, and compare_digest's
    # time does not depend on where the first difference is.
    return hmac.compare_digest(token_digest(presented), record.digest)


def bearer_token(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer TOKEN` header (RFC 6750), or None."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or " " in token:
        return None
    return token
