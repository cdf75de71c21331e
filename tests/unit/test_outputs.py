"""Outputs a task publishes on stdout as `::{"outputs": {...}}::` lines."""

from __future__ import annotations

from typing import Any

import pytest

import runner.outputs
from runner.outputs import (
    format_output_line,
    merge_outputs,
    output_line_problem,
    parse_output_line,
)


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (
            '::{"outputs": {"rows": 1200, "file": "green_2024-01.csv"}}::',
            {"rows": 1200, "file": "green_2024-01.csv"},
        ),
        ('  ::{"outputs": {"a": 1}}::  ', {"a": 1}),
        ('\t::{"outputs": {"a": 1}}::\r', {"a": 1}),
        ('::{"outputs": {}}::', {}),
        (
            '::{"outputs": {"meta": {"cols": ["a", "b"]}, "ok": true, "none": null}}::',
            {"meta": {"cols": ["a", "b"]}, "ok": True, "none": None},
        ),
        ('::{"outputs": {"a": 1}, "metrics": []}::', {"a": 1}),
        ('::{"outputs": {"text": "has :: inside }::"}}::', {"text": "has :: inside }::"}),
        ('::{"outputs": {"ünï": "cödé"}}::', {"ünï": "cödé"}),
        (
            '::{"outputs": {"big": 1.5e300, "small": -2.5e-300}}::',
            {"big": 1.5e300, "small": -2.5e-300},
        ),
    ],
)
def test_an_outputs_line_gives_its_outputs(line: str, expected: dict[str, Any]) -> None:
    assert parse_output_line(line) == expected
    assert output_line_problem(line) is None


@pytest.mark.parametrize(
    "line",
    [
        "",
        "processed 1200 rows",
        "::",
        "::::",
        "::notice:: GitHub style annotations are not outputs",
        'echo ::{"outputs": {"a": 1}}::',  # `set -x` echoing the command: not at the start
        'time=10:00 ::{"outputs": {"a": 1}}::',
        '::{"outputs": {"a": 1}}:: trailing text',
        '::{"outputs": {"a": 1}}',
        '{"outputs": {"a": 1}}',
        ':: {"outputs": {"a": 1}} ::',
    ],
)
def test_any_other_line_gives_none_and_no_problem(line: str) -> None:
    assert parse_output_line(line) is None
    assert output_line_problem(line) is None


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        (
            '::{"outputs": {"a": 1,}}::',
            "not valid JSON: Expecting property name enclosed in double quotes at column 23",
        ),
        (
            "::{outputs: 1}::",
            "not valid JSON: Expecting property name enclosed in double quotes at column 4",
        ),
        ('::{"outputs": {"a": NaN}}::', "not valid JSON: NaN is not valid JSON"),
        (
            '::{"outputs": {"n": 1e999}}::',
            "the number 1e999 is too large: outputs must be finite numbers",
        ),
        (
            '::{"outputs": {"deep": [{"n": -1.5e400}]}}::',
            "the number -1.5e400 is too large: outputs must be finite numbers",
        ),
        ('::{"outputs": 5}::', '"outputs" must be a JSON object, not a number'),
        ('::{"outputs": [1, 2]}::', '"outputs" must be a JSON object, not an array'),
        ('::{"outputs": "rows=5"}::', '"outputs" must be a JSON object, not a string'),
        ('::{"outputs": null}::', '"outputs" must be a JSON object, not null'),
        ('::{"outputs": true}::', '"outputs" must be a JSON object, not a boolean'),
        ('::{"metrics": [{"name": "rows"}]}::', 'the JSON object has no "outputs" key'),
        ("::{}::", 'the JSON object has no "outputs" key'),
        ('::{"a": 1}, {"b": 2}::', "not valid JSON: Extra data at column 11"),
    ],
)
def test_a_malformed_outputs_line_gives_none_and_a_problem(line: str, problem: str) -> None:
    assert parse_output_line(line) is None
    assert output_line_problem(line) == problem


def test_a_deeply_nested_line_is_a_problem_not_a_crash() -> None:
    line = '::{"outputs": ' + "[" * 100_000 + "]" * 100_000 + "}::"
    assert parse_output_line(line) is None
    assert output_line_problem(line) == "not valid JSON: nested too deeply"


def test_ordinary_lines_never_reach_the_json_parser(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("json.loads called for an ordinary line")

    monkeypatch.setattr(runner.outputs.json, "loads", refuse)
    for line in ["x" * 10_000, "  indented", "a::b", ":single colon", "{}"]:
        assert parse_output_line(line) is None


def test_several_lines_merge_and_later_keys_win() -> None:
    acc: dict[str, Any] = {}
    for line in [
        '::{"outputs": {"rows": 1, "file": "a.csv"}}::',
        "ordinary",
        '::{"outputs": {"rows": 2, "meta": {"x": 1}}}::',
        '::{"outputs": {"meta": {"y": 2}}}::',
    ]:
        published = parse_output_line(line)
        if published is not None:
            acc = merge_outputs(acc, published)
    assert acc == {"rows": 2, "file": "a.csv", "meta": {"y": 2}}


def test_merge_outputs_returns_a_new_dict() -> None:
    first = {"a": 1}
    second = {"a": 2, "b": 3}
    merged = merge_outputs(first, second)
    assert merged == {"a": 2, "b": 3}
    assert first == {"a": 1}
    assert second == {"a": 2, "b": 3}
    assert merged is not first and merged is not second


def test_format_output_line_round_trips() -> None:
    outputs = {"rows": 1200, "file": "grün.csv", "ok": True}
    line = format_output_line(outputs)
    assert line == '::{"outputs": {"rows": 1200, "file": "grün.csv", "ok": true}}::'
    assert parse_output_line(line) == outputs
