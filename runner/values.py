"""Input values and their types: parse `-i NAME=VALUE` and convert a value to its
declared type. Pure: no I/O, no flow models (`runner.flow` imports this module to check
defaults; `runner.inputs` checks given values against a loaded flow).

Every value is plain JSON data, because the store keeps inputs in a JSON column and
templates print them as they are:

    string, enum   str
    int, float     int, float (finite)
    bool           bool (true/false, yes/no, on/off, 1/0)
    json           any JSON value (no NaN or Infinity)
    array          list: a JSON list `[1, 2]` or comma-separated `a,b,c` (items stripped;
                   empty text is the empty list); items converted by `item_type` (string)
    datetime       str, ISO 8601 in UTC: `2024-01-31T10:00:00+00:00`; a time without an
                   offset is taken as UTC, one with an offset is converted to UTC
    date           str, `YYYY-MM-DD`
    file           str, the path as given (`runner.inputs` turns it into where the file is
                   in the container, `/workspace/inputs/ID/NAME`)
    secret         str, a value never stored nor printed in plain text
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, date, datetime
from enum import StrEnum
from typing import Any

from runner.errors import UsageError
from runner.messages import did_you_mean

__all__ = ["InputType", "coerce_value", "parse_input_args"]


class InputType(StrEnum):
    STRING = "string"
    INT = "int"
    FLOAT = "float"
    BOOL = "bool"
    ENUM = "enum"
    JSON = "json"
    ARRAY = "array"
    DATETIME = "datetime"
    DATE = "date"
    FILE = "file"
    SECRET = "secret"


_TRUE = frozenset({"true", "yes", "on", "1"})
_FALSE = frozenset({"false", "no", "off", "0"})
_INT = re.compile(r"[+-]?[0-9]+")


def coerce_value(
    type: InputType | str,
    raw: Any,
    values: tuple[str, ...] | None = None,
    item_type: InputType | str | None = None,
) -> Any:
    """`raw` as a value of input type `type`: a string from the command line, or a YAML
    default that may already be typed. `item_type` is the type of an array's items
    (string when None). Raises ValueError with a message for the user.

    A file input's value here is the path as given: only `resolve_inputs` looks at disk.
    """
    kind = str(type)
    if kind == "array":
        return _to_array(raw, values, "string" if item_type is None else str(item_type))
    convert = _CONVERTERS.get(kind)
    if convert is None:
        raise ValueError(f"unknown input type {kind!r}; expected one of {', '.join(_TYPES)}")
    return convert(raw, values)


def parse_input_args(args: Sequence[str]) -> dict[str, str]:
    """`{"rows": "100"}` from `-i rows=100` flags; the value may itself contain `=`."""
    result: dict[str, str] = {}
    bad: list[str] = []
    for arg in args:
        name, sep, value = arg.partition("=")
        if not sep or not name.strip():
            bad.append(f"bad input {arg!r}: expected NAME=VALUE, e.g. -i rows=100")
        elif name in result:
            bad.append(f"input {name!r} is given twice")
        else:
            result[name] = value
    if bad:
        raise UsageError("\n".join(bad))
    return result


# --- one converter per input type ---------------------------------------------------------


def _to_string(raw: Any, values: tuple[str, ...] | None) -> str:
    if isinstance(raw, str):
        return raw
    raise ValueError(f"expected a string, got {_show(raw)} (in YAML, put it in quotes)")


def _to_int(raw: Any, values: tuple[str, ...] | None) -> int:
    if isinstance(raw, int) and not isinstance(raw, bool):
        return raw
    if isinstance(raw, str) and _INT.fullmatch(raw.strip()):
        try:
            return int(raw.strip())
        except ValueError:  # more digits than Python converts (4300)
            raise ValueError(
                f"expected an int, got a number with {len(raw.strip())} digits"
            ) from None
    raise ValueError(f"expected an int, got {_show(raw)}")


def _to_float(raw: Any, values: tuple[str, ...] | None) -> float:
    value: float | None = None
    if isinstance(raw, int | float) and not isinstance(raw, bool):
        try:
            value = float(raw)
        except OverflowError:
            value = math.inf
    elif isinstance(raw, str):
        try:
            value = float(raw.strip())
        except ValueError:
            value = None
    if value is None:
        raise ValueError(f"expected a float, got {_show(raw)}")
    if not math.isfinite(value):
        raise ValueError(f"expected a finite float, got {_show(raw)}")
    return value


def _to_bool(raw: Any, values: tuple[str, ...] | None) -> bool:
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, int) and raw in (0, 1):
        return bool(raw)
    if isinstance(raw, str):
        word = raw.strip().lower()
        if word in _TRUE:
            return True
        if word in _FALSE:
            return False
    raise ValueError(f"expected a bool (true/false, yes/no, on/off, 1/0), got {_show(raw)}")


def _to_enum(raw: Any, values: tuple[str, ...] | None) -> str:
    if not values:
        raise ValueError("an enum input needs `values`, the list of accepted values")
    if isinstance(raw, str) and raw in values:
        return raw
    if isinstance(raw, int) and not isinstance(raw, bool) and str(raw) in values:
        return str(raw)  # a YAML default `1` for `values: ["1", "2"]`
    hint = did_you_mean(raw, values) if isinstance(raw, str) else ""
    raise ValueError(f"expected one of {_listing(values)}, got {_show(raw)}{hint}")


def _to_json(raw: Any, values: tuple[str, ...] | None) -> Any:
    if isinstance(raw, str):
        try:
            return json.loads(raw, parse_constant=_reject_constant)
        except json.JSONDecodeError as exc:
            raise ValueError(
                f"expected JSON, got {_show(raw)} ({exc.msg} at column {exc.colno})"
            ) from None
        except (ValueError, RecursionError) as exc:
            raise ValueError(f"expected JSON, got {_show(raw)} ({exc})") from None
    # A YAML default arrives parsed already: accept it if it is plain JSON data.
    try:
        json.dumps(raw, allow_nan=False)
    except (TypeError, ValueError, RecursionError):
        raise ValueError(f"expected a JSON value, got {_show(raw)}") from None
    return raw


def _reject_constant(name: str) -> Any:
    # NaN and Infinity are Python's extension to JSON; the store's JSON columns refuse them.
    raise ValueError(f"{name} is not valid JSON")


def _to_datetime(raw: Any, values: tuple[str, ...] | None) -> str:
    value: datetime | None = None
    if isinstance(raw, datetime):  # a YAML default: `default: 2024-01-31T10:00:00Z`
        value = raw
    elif isinstance(raw, date):
        value = datetime(raw.year, raw.month, raw.day)
    elif isinstance(raw, str):
        try:
            value = datetime.fromisoformat(raw.strip())
        except ValueError:
            value = None
    if value is None:
        raise ValueError(
            f"expected an ISO 8601 date and time like 2024-01-31T10:00:00Z, got {_show(raw)}"
        )
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC).isoformat()
    except OverflowError:  # 0001-01-01T00:00:00+01:00 is before year 1 in UTC
        raise ValueError(f"{_show(raw)} is out of range once converted to UTC") from None


def _to_date(raw: Any, values: tuple[str, ...] | None) -> str:
    if isinstance(raw, datetime):
        raise ValueError(f"expected a date like 2024-01-31, got a date and time {_show(raw)}")
    if isinstance(raw, date):  # a YAML default: `default: 2024-01-31`
        return raw.isoformat()
    if isinstance(raw, str):
        try:
            return date.fromisoformat(raw.strip()).isoformat()
        except ValueError:
            pass
    raise ValueError(f"expected a date like 2024-01-31, got {_show(raw)}")


def _to_secret(raw: Any, values: tuple[str, ...] | None) -> str:
    # The value is never quoted back: an error message is printed and may be stored.
    if isinstance(raw, str):
        return raw
    raise ValueError(f"expected a string, got {_kind(raw)} (a secret's value is never shown)")


def _kind(raw: Any) -> str:
    if raw is None:
        return "null"
    if isinstance(raw, bool):
        return "a bool"
    if isinstance(raw, int | float):
        return "a number"
    return "a list" if isinstance(raw, list | tuple) else f"a value of type {type(raw).__name__}"


def _to_file(raw: Any, values: tuple[str, ...] | None) -> str:
    if isinstance(raw, os.PathLike):  # a Path from the API
        raw = os.fspath(raw)
    if isinstance(raw, str) and raw.strip():
        return raw
    raise ValueError(f"expected the path of a file, got {_show(raw)}")


def _to_array(raw: Any, values: tuple[str, ...] | None, item_type: str) -> list[Any]:
    if item_type in ("array", "file", "secret"):
        raise ValueError(f"an array cannot hold items of type {item_type}")
    items: Any
    if isinstance(raw, list | tuple):  # a YAML default, or a list from the API
        items = raw
    elif isinstance(raw, str) and raw.strip().startswith("["):
        try:
            items = json.loads(raw, parse_constant=_reject_constant)
        except json.JSONDecodeError as exc:
            raise ValueError(
                f"expected a JSON list, got {_show(raw)} ({exc.msg} at column {exc.colno})"
            ) from None
        except (ValueError, RecursionError) as exc:
            raise ValueError(f"expected a JSON list, got {_show(raw)} ({exc})") from None
        if not isinstance(items, list):  # `[1] [2]` fails to parse; this is for mypy
            raise ValueError(f"expected a JSON list, got {_show(raw)}")
    elif isinstance(raw, str):
        text = raw.strip()
        items = [item.strip() for item in text.split(",")] if text else []
    else:
        raise ValueError(
            f"expected a list (JSON like [1, 2], or comma-separated like a,b), got {_show(raw)}"
        )
    result = []
    for number, item in enumerate(items, start=1):
        try:
            result.append(coerce_value(item_type, item, values))
        except ValueError as exc:
            raise ValueError(f"item {number}: {exc}") from None
    return result


_CONVERTERS: dict[str, Callable[[Any, tuple[str, ...] | None], Any]] = {
    "string": _to_string,
    "int": _to_int,
    "float": _to_float,
    "bool": _to_bool,
    "enum": _to_enum,
    "json": _to_json,
    "datetime": _to_datetime,
    "date": _to_date,
    "file": _to_file,
    "secret": _to_secret,
}
_TYPES = (*_CONVERTERS, "array")


# --- message helpers ----------------------------------------------------------------------


def _show(raw: Any) -> str:
    """A value as a message shows it: short, and in YAML's words for true/false/null."""
    if raw is None:
        return "null"
    if isinstance(raw, bool):
        return "true" if raw else "false"
    if isinstance(raw, int) and raw.bit_length() > 256:
        return "a very large number"
    text = repr(raw)
    return text if len(text) <= 60 else text[:57] + "..."


def _listing(names: Iterable[str]) -> str:
    return ", ".join(repr(name) for name in names)
