"""Typed run-time inputs: parse `-i NAME=VALUE`, convert values to their declared type,
and check what was given against what a flow declares.

Pure: no I/O. `runner.flow` calls `coerce_value` to check defaults, so this module imports
flow types only for type checking.
"""

from __future__ import annotations

import difflib
import json
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from runner.errors import InputError, UsageError

if TYPE_CHECKING:
    from runner.flow import InputType
    from runner.loader import LoadedFlow

__all__ = ["coerce_value", "parse_input_args", "resolve_inputs"]

_TRUE = frozenset({"true", "yes", "on", "1"})
_FALSE = frozenset({"false", "no", "off", "0"})
_INT = re.compile(r"[+-]?[0-9]+")


def coerce_value(type: InputType | str, raw: Any, values: tuple[str, ...] | None = None) -> Any:
    """`raw` as a value of input type `type`: a string from the command line, or a YAML
    default that may already be typed. Raises ValueError with a message for the user."""
    kind = str(type)
    convert = _CONVERTERS.get(kind)
    if convert is None:
        raise ValueError(f"unknown input type {kind!r}; expected one of {', '.join(_CONVERTERS)}")
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


def resolve_inputs(loaded: LoadedFlow, given: Mapping[str, Any]) -> dict[str, Any]:
    """A value for every input the flow declares: the one given, else the default, else
    None for an optional input. Raises one InputError listing every problem, each on
    its own line and naming the line of the input's declaration."""
    declared = [spec.id for spec in loaded.flow.inputs]
    values: dict[str, Any] = {}
    problems: list[tuple[int | None, str]] = []

    def where(line: int | None) -> str:
        return f"{loaded.file}:{line}" if line is not None else loaded.file

    for index, spec in enumerate(loaded.flow.inputs):
        line = loaded.line_of(("inputs", index))
        if spec.id in given:
            raw = given[spec.id]
        elif spec.default is not None:
            raw = spec.default
        elif spec.is_required:
            problems.append(
                (
                    line,
                    f"{where(line)}: input {spec.id!r} is required: give it with -i {spec.id}=VALUE",
                )
            )
            continue
        else:
            values[spec.id] = None
            continue
        try:
            values[spec.id] = coerce_value(spec.type, raw, spec.values)
        except ValueError as exc:
            problems.append((line, f"{where(line)}: input {spec.id!r}: {exc}"))
    for name in given:
        if name in declared:
            continue
        line = loaded.line_of(("inputs",)) if declared else None
        if not declared:
            hint = "; this flow declares no inputs"
        else:
            hint = _did_you_mean(name, declared) or f"; this flow declares {_listing(declared)}"
        problems.append((line, f"{where(line)}: unknown input {name!r}{hint}"))
    if problems:
        problems.sort(key=lambda problem: (problem[0] is None, problem[0] or 0))
        raise InputError("\n".join(message for _, message in problems))
    return values


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
    hint = _did_you_mean(raw, values) if isinstance(raw, str) else ""
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


_CONVERTERS: dict[str, Callable[[Any, tuple[str, ...] | None], Any]] = {
    "string": _to_string,
    "int": _to_int,
    "float": _to_float,
    "bool": _to_bool,
    "enum": _to_enum,
    "json": _to_json,
}


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


def _did_you_mean(word: str, candidates: Iterable[str]) -> str:
    # Same wording as dag.did_you_mean; not imported from there because dag imports flow.
    matches = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return f" (did you mean {matches[0]!r}?)" if matches else ""
