"""Run-time inputs: `-i NAME=VALUE` parsing, type conversion, and checks against a flow."""

from __future__ import annotations

import ast
import textwrap
from pathlib import Path
from typing import Any

import pytest

import runner.inputs
from runner.errors import FlowError, InputError, UsageError
from runner.flow import InputType
from runner.inputs import coerce_value, parse_input_args, resolve_inputs
from runner.loader import LoadedFlow, parse_flow

# --- coerce_value ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "raw", "expected"),
    [
        ("string", "hello", "hello"),
        ("string", "", ""),
        ("string", " spaced ", " spaced "),
        ("int", "42", 42),
        ("int", " -7 ", -7),
        ("int", "+3", 3),
        ("int", 100, 100),
        ("int", "9" * 100, int("9" * 100)),
        ("float", "1.5", 1.5),
        ("float", "2", 2.0),
        ("float", "1e3", 1000.0),
        ("float", 3, 3.0),
        ("float", 0.25, 0.25),
        ("bool", "true", True),
        ("bool", "TRUE", True),
        ("bool", "Yes", True),
        ("bool", "on", True),
        ("bool", "1", True),
        ("bool", "false", False),
        ("bool", "No", False),
        ("bool", "OFF", False),
        ("bool", "0", False),
        ("bool", True, True),
        ("bool", 0, False),
        ("json", '{"a": [1, 2]}', {"a": [1, 2]}),
        ("json", "3", 3),
        ("json", '"text"', "text"),
        ("json", "null", None),
        ("json", {"already": ["parsed"]}, {"already": ["parsed"]}),
        ("json", [1, "two"], [1, "two"]),
        ("json", 7, 7),
    ],
)
def test_coerce_good_values(kind: str, raw: Any, expected: Any) -> None:
    value = coerce_value(kind, raw, None)
    assert value == expected
    assert type(value) is type(expected)


def test_coerce_takes_the_enum_type_too() -> None:
    assert coerce_value(InputType.INT, "5", None) == 5
    assert coerce_value(InputType.ENUM, "green", ("green", "yellow")) == "green"


@pytest.mark.parametrize(
    ("kind", "raw", "message"),
    [
        ("int", "abc", "expected an int, got 'abc'"),
        ("int", "1.5", "expected an int, got '1.5'"),
        ("int", "", "expected an int, got ''"),
        ("int", "1e3", "expected an int, got '1e3'"),
        ("int", True, "expected an int, got true"),
        ("int", 1.0, "expected an int, got 1.0"),
        ("int", None, "expected an int, got null"),
        ("int", "9" * 5000, "expected an int, got a number with 5000 digits"),
        ("float", "abc", "expected a float, got 'abc'"),
        ("float", False, "expected a float, got false"),
        ("float", "nan", "expected a finite float, got 'nan'"),
        ("float", "inf", "expected a finite float, got 'inf'"),
        ("float", 10**400, "expected a finite float, got a very large number"),
        ("bool", "maybe", "expected a bool (true/false, yes/no, on/off, 1/0), got 'maybe'"),
        ("bool", 2, "expected a bool (true/false, yes/no, on/off, 1/0), got 2"),
        ("string", 100, "expected a string, got 100 (in YAML, put it in quotes)"),
        ("string", True, "expected a string, got true (in YAML, put it in quotes)"),
        (
            "json",
            "{bad",
            "expected JSON, got '{bad' (Expecting property name enclosed in double quotes at column 2)",
        ),
        ("json", "NaN", "expected JSON, got 'NaN' (NaN is not valid JSON)"),
        ("json", float("nan"), "expected a JSON value, got nan"),
        ("json", {1, 2}, "expected a JSON value, got {1, 2}"),
    ],
)
def test_coerce_bad_values_say_what_was_expected(kind: str, raw: Any, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        coerce_value(kind, raw, None)
    assert str(caught.value) == message


def test_enum_values_must_be_listed_ones() -> None:
    values = ("green", "yellow")
    assert coerce_value("enum", "yellow", values) == "yellow"
    assert coerce_value("enum", 1, ("1", "2")) == "1"
    with pytest.raises(ValueError) as caught:
        coerce_value("enum", "gren", values)
    assert (
        str(caught.value) == "expected one of 'green', 'yellow', got 'gren' (did you mean 'green'?)"
    )
    with pytest.raises(ValueError) as caught:
        coerce_value("enum", "Blue", values)
    assert str(caught.value) == "expected one of 'green', 'yellow', got 'Blue'"
    with pytest.raises(ValueError, match="needs `values`"):
        coerce_value("enum", "green", None)


def test_an_unknown_type() -> None:
    with pytest.raises(ValueError, match="unknown input type 'date'"):
        coerce_value("date", "2024-01-01", None)


def test_long_values_are_shortened_in_messages() -> None:
    with pytest.raises(ValueError) as caught:
        coerce_value("int", "x" * 500, None)
    assert len(str(caught.value)) < 100
    assert str(caught.value).endswith("...")


def test_deeply_nested_json_is_an_error_not_a_crash() -> None:
    with pytest.raises(ValueError, match="expected JSON"):
        coerce_value("json", "[" * 100_000, None)


def test_inputs_does_not_import_flow_at_module_level() -> None:
    """flow.py imports inputs lazily; a module-level import back would be a cycle."""
    tree = ast.parse(Path(runner.inputs.__file__).read_text())
    imported = set()
    for node in tree.body:  # top level only; TYPE_CHECKING blocks are ifs
        if isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module)
        elif isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
    assert not {"runner.flow", "runner.loader", "runner.dag"} & imported


# --- parse_input_args ------------------------------------------------------------------


def test_parse_input_args() -> None:
    assert parse_input_args([]) == {}
    assert parse_input_args(["rows=100", "query=a=b", "empty=", "spaced= x "]) == {
        "rows": "100",
        "query": "a=b",
        "empty": "",
        "spaced": " x ",
    }


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["rows"], "bad input 'rows': expected NAME=VALUE, e.g. -i rows=100"),
        (["=5"], "bad input '=5': expected NAME=VALUE, e.g. -i rows=100"),
        (["ok=1", " =5"], "bad input ' =5': expected NAME=VALUE, e.g. -i rows=100"),
        (["a=1", "a=2"], "input 'a' is given twice"),
    ],
)
def test_parse_input_args_refuses_bad_ones(args: list[str], message: str) -> None:
    with pytest.raises(UsageError) as caught:
        parse_input_args(args)
    assert str(caught.value) == message
    assert caught.value.exit_code == 2


def test_parse_input_args_names_every_bad_argument() -> None:
    with pytest.raises(UsageError) as caught:
        parse_input_args(["a", "b=1", "c"])
    assert str(caught.value).splitlines() == [
        "bad input 'a': expected NAME=VALUE, e.g. -i rows=100",
        "bad input 'c': expected NAME=VALUE, e.g. -i rows=100",
    ]


# --- resolve_inputs --------------------------------------------------------------------

FLOW = """\
id: etl
namespace: demo
inputs:
  - id: name
  - {id: verbose, type: bool, default: false}
  - {id: ratio, type: float, required: false}
  - id: rows
    type: int
    default: 100
  - {id: color, type: enum, values: [green, yellow], required: true}
  - {id: config, type: json, default: {retries: 3}}
  - {id: note, required: false}
tasks:
  - {id: a, image: alpine}
"""


def etl(text: str = FLOW) -> LoadedFlow:
    return parse_flow(text, path=Path("flows/etl.yml"))


def test_every_declared_input_gets_a_value() -> None:
    values = resolve_inputs(etl(), {"name": "x", "color": "green", "ratio": "0.5"})
    assert values == {
        "name": "x",
        "verbose": False,
        "ratio": 0.5,
        "rows": 100,
        "color": "green",
        "config": {"retries": 3},
        "note": None,
    }


def test_given_values_override_defaults() -> None:
    values = resolve_inputs(
        etl(), {"name": "x", "color": "yellow", "rows": "7", "verbose": "yes", "config": "[1]"}
    )
    assert (values["rows"], values["verbose"], values["config"]) == (7, True, [1])


def test_a_bad_value_names_the_file_and_the_line_of_the_input() -> None:
    with pytest.raises(InputError) as caught:
        resolve_inputs(etl(), {"name": "x", "color": "green", "rows": "abc"})
    assert str(caught.value) == "flows/etl.yml:7: input 'rows': expected an int, got 'abc'"
    assert caught.value.exit_code == 2


def test_all_problems_at_once_one_per_line() -> None:
    with pytest.raises(InputError) as caught:
        resolve_inputs(etl(), {"rows": "1.5", "colour": "green", "verbose": "maybe", "config": "{"})
    assert str(caught.value).splitlines() == [
        "flows/etl.yml:3: unknown input 'colour' (did you mean 'color'?)",
        "flows/etl.yml:4: input 'name' is required: give it with -i name=VALUE",
        "flows/etl.yml:5: input 'verbose': expected a bool (true/false, yes/no, on/off, 1/0), got 'maybe'",
        "flows/etl.yml:7: input 'rows': expected an int, got '1.5'",
        "flows/etl.yml:10: input 'color' is required: give it with -i color=VALUE",
        "flows/etl.yml:11: input 'config': expected JSON, got '{' (Expecting property name enclosed in double quotes at column 2)",
    ]


def test_an_unknown_input_without_a_near_miss_lists_the_declared_ones() -> None:
    with pytest.raises(InputError) as caught:
        resolve_inputs(etl(), {"name": "x", "color": "green", "zzz": "1"})
    assert str(caught.value) == (
        "flows/etl.yml:3: unknown input 'zzz'; this flow declares "
        "'name', 'verbose', 'ratio', 'rows', 'color', 'config', 'note'"
    )


def test_a_flow_without_inputs() -> None:
    loaded = etl("id: x\ntasks: [{id: a, image: i}]\n")
    assert resolve_inputs(loaded, {}) == {}
    with pytest.raises(InputError) as caught:
        resolve_inputs(loaded, {"rows": "1"})
    assert str(caught.value) == "flows/etl.yml: unknown input 'rows'; this flow declares no inputs"


def test_required_true_with_a_default_uses_the_default() -> None:
    loaded = etl(
        "id: x\ninputs: [{id: n, type: int, required: true, default: 3}]\ntasks: [{id: a, image: i}]\n"
    )
    assert resolve_inputs(loaded, {}) == {"n": 3}


def test_typed_values_from_the_api_are_accepted() -> None:
    values = resolve_inputs(etl(), {"name": "x", "color": "green", "rows": 5, "verbose": True})
    assert (values["rows"], values["verbose"]) == (5, True)


def test_a_default_that_does_not_fit_its_type_fails_at_load() -> None:
    text = textwrap.dedent(
        """\
        id: x
        inputs:
          - {id: rows, type: int, default: many}
          - {id: color, type: enum, values: [green], default: red}
          - {id: name, default: 100}
        tasks: [{id: a, image: i}]
        """
    )
    with pytest.raises(FlowError) as caught:
        etl(text)
    assert [(p.line, p.message) for p in caught.value.problems] == [
        (3, "default: expected an int, got 'many'"),
        (4, "default: expected one of 'green', got 'red'"),
        (5, "default: expected a string, got 100 (in YAML, put it in quotes)"),
    ]
