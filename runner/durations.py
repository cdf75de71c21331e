"""Durations and memory sizes as users write them: `30s`, `1h30m`, `PT10M`; `512m`, `1GiB`.

Pure parsing, no I/O. Each parsed value keeps the text the user wrote, so messages can
say `timed out after 10m` rather than `after 600.0 seconds`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from pydantic import GetCoreSchemaHandler
from pydantic_core import core_schema

_NUMBER = r"\d+(?:\.\d+)?"
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_COMPACT = re.compile(rf"^(?:\s*{_NUMBER}\s*(?:ms|s|m|h|d))+\s*$")
_COMPACT_PART = re.compile(rf"({_NUMBER})\s*(ms|s|m|h|d)")
_PLAIN = re.compile(rf"^{_NUMBER}$")
# ISO 8601 without years and months, whose length depends on the calendar.
_ISO = re.compile(
    rf"^P(?:(?P<w>{_NUMBER})W)?(?:(?P<d>{_NUMBER})D)?"
    rf"(?:T(?:(?P<h>{_NUMBER})H)?(?:(?P<m>{_NUMBER})M)?(?:(?P<s>{_NUMBER})S)?)?$"
)
_DURATION_HELP = "use e.g. 30s, 10m, 1h30m, 500ms, PT10M or a number of seconds"


MAX_DURATION = timedelta(days=36500)
"""The longest duration taken (100 years): Python's waits and timers refuse more than
about 292 years (`threading.TIMEOUT_MAX`), and `timedelta` more than 999999999 days."""


def parse_duration(value: Any) -> timedelta:
    """`30s`, `10m`, `1h30m`, `500ms`, `2d`, `PT1H30M`, `P1D`, or a number of seconds."""
    try:
        delta: timedelta | None = _to_timedelta(value)
    except OverflowError:  # inf, or beyond what timedelta holds
        delta = None
    if delta is None or delta > MAX_DURATION:
        raise ValueError(f"duration {_short(value)} is too long (at most 36500d, 100 years)")
    return delta


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:20]}... ({len(text)} characters)"


def _to_timedelta(value: Any) -> timedelta:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(
            f"a duration must be text like 30s or a number of seconds, not {_short(value)}"
        )
    if isinstance(value, int | float):
        if value != value:  # NaN
            raise ValueError(f"a duration must be a number of seconds, not {_short(value)}")
        if value < 0:
            raise ValueError(f"a duration cannot be negative: {_short(value)}")
        return timedelta(seconds=value)
    text = value.strip()
    if _PLAIN.match(text):
        return timedelta(seconds=float(text))
    lowered = text.lower()
    if _COMPACT.match(lowered):
        return timedelta(
            seconds=sum(float(n) * _UNIT_SECONDS[u] for n, u in _COMPACT_PART.findall(lowered))
        )
    iso = _ISO.match(text.upper())
    if iso and text.upper() not in ("P", "PT") and not text.upper().endswith("T"):
        parts = {k: float(v) for k, v in iso.groupdict().items() if v is not None}
        return timedelta(
            weeks=parts.get("w", 0),
            days=parts.get("d", 0),
            hours=parts.get("h", 0),
            minutes=parts.get("m", 0),
            seconds=parts.get("s", 0),
        )
    if re.match(r"^P.*[YM].*T|^P[^T]*[YM]", text.upper()):
        raise ValueError(
            f"duration {_short(value)}: years and months have no fixed length; use days"
        )
    raise ValueError(f"{_short(value)} is not a duration ({_DURATION_HELP})")


def format_number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


@dataclass(frozen=True)
class Duration:
    """A parsed duration and the text it came from (`10m`; a bare number gets `s`)."""

    text: str
    delta: timedelta

    @classmethod
    def parse(cls, value: Any) -> Duration:
        if isinstance(value, Duration):
            return value
        delta = parse_duration(value)
        text = f"{format_number(value)}s" if isinstance(value, int | float) else value.strip()
        if isinstance(value, str) and _PLAIN.match(text):
            text += "s"
        return cls(text=text, delta=delta)

    @property
    def seconds(self) -> float:
        return self.delta.total_seconds()

    def __str__(self) -> str:
        return self.text

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.no_info_plain_validator_function(
            cls.parse, serialization=core_schema.plain_serializer_function_ser_schema(str)
        )


# Docker's convention: every unit is a power of 1024 (`512m` is 512 MiB).
_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "k": 1024,
    "kb": 1024,
    "kib": 1024,
    "m": 1024**2,
    "mb": 1024**2,
    "mib": 1024**2,
    "g": 1024**3,
    "gb": 1024**3,
    "gib": 1024**3,
}
_SIZE = re.compile(rf"^({_NUMBER})\s*([a-z]*)$")
# Below this the Docker engine refuses to create the container.
MIN_MEMORY_BYTES = 6 * 1024**2
# The engine reads the limit into an int64.
MAX_MEMORY_BYTES = 2**63 - 1


def parse_memory(value: Any) -> int:
    """`512m`, `1.5g`, `256MiB`, `64kb` (case-insensitive, powers of 1024), or bytes."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(f"memory must be a size like 512m or 1g, not {_short(value)}")
    match = _SIZE.match(str(value).strip().lower())
    if match is None or match[2] not in _SIZE_UNITS:
        raise ValueError(
            f"{_short(value)} is not a memory size (use e.g. 512m, 1g, 256MiB; units k, m, g)"
        )
    try:
        size = int(float(match[1]) * _SIZE_UNITS[match[2]])
    except OverflowError:  # more digits than a float holds: inf
        size = MAX_MEMORY_BYTES + 1
    if size > MAX_MEMORY_BYTES:
        raise ValueError(f"memory {_short(value)} is larger than Docker takes (8 EiB)")
    if size < MIN_MEMORY_BYTES:
        raise ValueError(f"memory {_short(value)} is below Docker's minimum of 6m")
    return size


@dataclass(frozen=True)
class MemorySize:
    """A memory limit in bytes and the text it came from."""

    text: str
    bytes: int

    @classmethod
    def parse(cls, value: Any) -> MemorySize:
        if isinstance(value, MemorySize):
            return value
        return cls(text=str(value).strip(), bytes=parse_memory(value))

    def __str__(self) -> str:
        return self.text

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.no_info_plain_validator_function(
            cls.parse, serialization=core_schema.plain_serializer_function_ser_schema(str)
        )
