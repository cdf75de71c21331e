"""Outputs a task publishes on stdout: one line `::{"outputs": {"rows": 1200}}::` (Kestra's
convention), read from the task's log as it streams.

    parse_output_line(line)    the outputs of that line, or None
    output_line_problem(line)  why a line shaped like an outputs line was not taken
    merge_outputs(acc, new)    several lines merge; later keys win

A malformed outputs line does not fail the task (its work may be done) and does not
raise: `parse_output_line` returns None, as for any other line, and a caller that wants
to warn asks `output_line_problem`, which only does work for lines starting with `::`:

    published = parse_output_line(line)
    if published is None and (problem := output_line_problem(line)) is not None:
        log.warning("output_line_ignored", reason=problem)

Pure: no I/O. Called for every stdout line of tasks that print half a million lines, so an
ordinary line costs one `startswith`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

__all__ = ["format_output_line", "merge_outputs", "output_line_problem", "parse_output_line"]

_MARK = "::"


def parse_output_line(line: str) -> dict[str, Any] | None:
    """The `outputs` object of a line that is exactly `::{...}::` (whitespace around it
    allowed) holding a JSON object with an `outputs` object; None for any other line,
    malformed outputs lines included."""
    # Inline, not a helper call: this runs for every line of every task.
    if not line.startswith(_MARK) and not (line[:1].isspace() and line.lstrip().startswith(_MARK)):
        return None
    result = _read(line)
    return result if isinstance(result, dict) else None


def output_line_problem(line: str) -> str | None:
    """Why `line`, which looks like an outputs line (`::{...}::`), gives no outputs; None
    for an ordinary line or a good outputs line."""
    if not _may_be_outputs(line):
        return None
    result = _read(line)
    return result if isinstance(result, str) else None


def merge_outputs(acc: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """A new dict with the keys of both; a key in `new` replaces the same key in `acc`
    (whole values: nested objects are not merged)."""
    return {**acc, **new}


def format_output_line(outputs: Mapping[str, Any]) -> str:
    """The line a task prints to publish `outputs` (for fakes, tests and docs)."""
    return f"{_MARK}{json.dumps({'outputs': dict(outputs)}, ensure_ascii=False)}{_MARK}"


def _may_be_outputs(line: str) -> bool:
    # The common case first: one C-level check rejects almost every log line.
    if line.startswith(_MARK):
        return True
    return line[:1].isspace() and line.lstrip().startswith(_MARK)


def _read(line: str) -> dict[str, Any] | str | None:
    """The outputs (a dict), the reason a would-be outputs line is wrong (a str), or None
    for a line that is not shaped `::{...}::` at all."""
    text = line.strip()
    if len(text) < len("::{}::") or not (text.startswith("::{") and text.endswith("}::")):
        return None
    try:
        message = json.loads(text[2:-2], parse_constant=_reject_constant, parse_float=_finite_float)
    except json.JSONDecodeError as exc:
        # +2: the column in the line, after `::` (and any indentation stripped)
        return f"not valid JSON: {exc.msg} at column {exc.colno + 2}"
    except _NotFinite as exc:
        return str(exc)
    except ValueError as exc:  # NaN and Infinity, refused by _reject_constant
        return f"not valid JSON: {exc}"
    except RecursionError:
        return "not valid JSON: nested too deeply"
    if not isinstance(message, dict):  # given the braces, only for the type checker
        return "the JSON is not an object"
    if "outputs" not in message:
        return 'the JSON object has no "outputs" key'
    outputs = message["outputs"]
    if not isinstance(outputs, dict):
        return f'"outputs" must be a JSON object, not {_json_type(outputs)}'
    return outputs


class _NotFinite(ValueError):
    pass


def _finite_float(text: str) -> float:
    # `1e999` is valid JSON but no double: Python reads it as inf, which Postgres refuses
    # and SQLite stores as `Infinity` (then `runner show --json` is not JSON).
    value = float(text)
    if not math.isfinite(value):
        shown = text if len(text) <= 20 else text[:17] + "..."
        raise _NotFinite(f"the number {shown} is too large: outputs must be finite numbers")
    return value


def _reject_constant(name: str) -> Any:
    # NaN and Infinity are Python's extension to JSON; the store's JSON columns refuse them.
    raise ValueError(f"{name} is not valid JSON")


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return "an array"
