"""Small helpers for writing messages to people: every module may import these.

`did_you_mean` suggests the near miss of a misspelt name; `shorten` cuts a long value
(a 200 KB `cpus:` must not be echoed in full); `listing` names a few things of many.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

MAX_SHOWN = 80
"""Longest value a message quotes before it is cut with `...`."""


def did_you_mean(word: str, candidates: Iterable[str]) -> str:
    """` (did you mean 'x'?)` for a near miss, else an empty string."""
    matches = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return f" (did you mean {matches[0]!r}?)" if matches else ""


def shorten(text: str, limit: int = MAX_SHOWN) -> str:
    """`text`, or its start and `... (N characters)` if it is longer than `limit`."""
    if len(text) <= limit:
        return text
    return f"{text[: max(limit - 20, 10)]}... ({len(text)} characters)"


def listing(names: Iterable[str], *, limit: int = 20) -> str:
    """`a, b, c` with at most `limit` names, then `, ...`."""
    shown = list(names)
    text = ", ".join(shown[:limit])
    return text + (", ..." if len(shown) > limit else "")
