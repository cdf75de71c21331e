"""Run-time inputs: `-i NAME=VALUE` parsing, type conversion, and checks against a flow."""

from __future__ import annotations

import os
import textwrap
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from runner.errors import FlowError, InputError, UsageError
from runner.inputs import (
    INPUT_FILES_PATH,
    coerce_value,
    file_inputs,
    parse_input_args,
    resolve_inputs,
)
from runner.loader import LoadedFlow, parse_flow
from runner.values import InputType

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
    with pytest.raises(ValueError) as caught:
        coerce_value("timestamp", "2024-01-01", None)
    assert str(caught.value) == (
        "unknown input type 'timestamp'; expected one of "
        "string, int, float, bool, enum, json, datetime, date, file, secret, array"
    )


def test_long_values_are_shortened_in_messages() -> None:
    with pytest.raises(ValueError) as caught:
        coerce_value("int", "x" * 500, None)
    assert len(str(caught.value)) < 100
    assert str(caught.value).endswith("...")


def test_deeply_nested_json_is_an_error_not_a_crash() -> None:
    with pytest.raises(ValueError, match="expected JSON"):
        coerce_value("json", "[" * 100_000, None)


# --- array, datetime, date, file ----------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "item_type", "expected"),
    [
        ("a,b,c", None, ["a", "b", "c"]),
        (" a , b ", None, ["a", "b"]),
        ("one", None, ["one"]),
        ("", None, []),
        ("   ", None, []),
        ("a,,b", None, ["a", "", "b"]),
        ('["a,b", "c"]', None, ["a,b", "c"]),
        (" [] ", None, []),
        ("1,2,3", "int", [1, 2, 3]),
        ("[1, 2]", "int", [1, 2]),
        ("[1.5, 2]", "float", [1.5, 2.0]),
        ("yes,off", "bool", [True, False]),
        ('[{"a": 1}, [2]]', "json", [{"a": 1}, [2]]),
        ("2024-01-31,2024-02-01", "date", ["2024-01-31", "2024-02-01"]),
        ("2024-01-31T10:00:00Z", "datetime", ["2024-01-31T10:00:00+00:00"]),
        (["x", "y"], None, ["x", "y"]),
        ((1, 2), "int", [1, 2]),
        ([], "int", []),
    ],
)
def test_an_array_from_json_or_commas(raw: Any, item_type: str | None, expected: list[Any]) -> None:
    assert coerce_value("array", raw, None, item_type) == expected
    assert coerce_value(InputType.ARRAY, raw, None, item_type) == expected


@pytest.mark.parametrize(
    ("raw", "item_type", "message"),
    [
        ("1,x,3", "int", "item 2: expected an int, got 'x'"),
        ("[1, 2]", None, "item 1: expected a string, got 1 (in YAML, put it in quotes)"),
        ("[1, 2", None, "expected a JSON list, got '[1, 2' (Expecting ',' delimiter at column 6)"),
        ("[NaN]", "float", "expected a JSON list, got '[NaN]' (NaN is not valid JSON)"),
        (5, None, "expected a list (JSON like [1, 2], or comma-separated like a,b), got 5"),
        (
            {"a": 1},
            None,
            "expected a list (JSON like [1, 2], or comma-separated like a,b), got {'a': 1}",
        ),
        ("a", "file", "an array cannot hold items of type file"),
        ("a", "array", "an array cannot hold items of type array"),
        ("2024-13-01", "date", "item 1: expected a date like 2024-01-31, got '2024-13-01'"),
    ],
)
def test_bad_arrays(raw: Any, item_type: str | None, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        coerce_value("array", raw, None, item_type)
    assert str(caught.value) == message


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("2024-01-31T10:00:00Z", "2024-01-31T10:00:00+00:00"),
        ("2024-01-31T10:00:00", "2024-01-31T10:00:00+00:00"),  # naive: UTC
        ("2024-01-31 10:00", "2024-01-31T10:00:00+00:00"),
        (" 2024-01-31T12:30:00+02:00 ", "2024-01-31T10:30:00+00:00"),  # converted to UTC
        ("2024-01-31T10:00:00.250000-05:00", "2024-01-31T15:00:00.250000+00:00"),
        ("2024-01-31", "2024-01-31T00:00:00+00:00"),
        (datetime(2024, 1, 31, 10, 0), "2024-01-31T10:00:00+00:00"),
        (
            datetime(2024, 1, 31, 10, 0, tzinfo=timezone(timedelta(hours=1))),
            "2024-01-31T09:00:00+00:00",
        ),
        (date(2024, 1, 31), "2024-01-31T00:00:00+00:00"),
    ],
)
def test_a_datetime_is_an_iso_string_in_utc(raw: Any, expected: str) -> None:
    value = coerce_value("datetime", raw, None)
    assert value == expected
    assert datetime.fromisoformat(value).tzinfo == UTC


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (
            "yesterday",
            "expected an ISO 8601 date and time like 2024-01-31T10:00:00Z, got 'yesterday'",
        ),
        (
            "2024-02-30T10:00:00",
            "expected an ISO 8601 date and time like 2024-01-31T10:00:00Z, got '2024-02-30T10:00:00'",
        ),
        ("", "expected an ISO 8601 date and time like 2024-01-31T10:00:00Z, got ''"),
        (
            1706695200,
            "expected an ISO 8601 date and time like 2024-01-31T10:00:00Z, got 1706695200",
        ),
        (
            "0001-01-01T00:00:00+01:00",
            "'0001-01-01T00:00:00+01:00' is out of range once converted to UTC",
        ),
    ],
)
def test_bad_datetimes(raw: Any, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        coerce_value("datetime", raw, None)
    assert str(caught.value) == message


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("2024-01-31", "2024-01-31"),
        (" 2024-01-31\n", "2024-01-31"),
        ("20240131", "2024-01-31"),
        (date(2024, 1, 31), "2024-01-31"),
    ],
)
def test_a_date_is_an_iso_string(raw: Any, expected: str) -> None:
    assert coerce_value("date", raw, None) == expected


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("2024-01-31T10:00:00", "expected a date like 2024-01-31, got '2024-01-31T10:00:00'"),
        ("31/01/2024", "expected a date like 2024-01-31, got '31/01/2024'"),
        (
            datetime(2024, 1, 31, 10, 0),
            "expected a date like 2024-01-31, got a date and time datetime.datetime(2024, 1, 31, 10, 0)",
        ),
        (20240131, "expected a date like 2024-01-31, got 20240131"),
    ],
)
def test_bad_dates(raw: Any, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        coerce_value("date", raw, None)
    assert str(caught.value) == message


def test_coerce_leaves_a_file_path_as_given_without_looking_at_disk() -> None:
    assert coerce_value("file", "no/such/file.csv", None) == "no/such/file.csv"
    assert coerce_value("file", Path("no/such/file.csv"), None) == "no/such/file.csv"
    for raw, shown in (("", "''"), ("  ", "'  '"), (5, "5"), (None, "null")):
        with pytest.raises(ValueError) as caught:
            coerce_value("file", raw, None)
        assert str(caught.value) == f"expected the path of a file, got {shown}"


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


def test_new_types_resolve_from_the_command_line_and_from_defaults() -> None:
    text = textwrap.dedent(
        """\
        id: x
        inputs:
          - {id: tags, type: array}
          - {id: months, type: array, item_type: int}
          - {id: since, type: datetime, default: 2024-01-31T10:00:00+01:00}
          - {id: day, type: date, default: 2024-01-31}
          - {id: names, type: array, default: [a, b]}
        tasks: [{id: a, image: i}]
        """
    )
    values = resolve_inputs(etl(text), {"tags": "x,y", "months": "[1, 2]"})
    assert values == {
        "tags": ["x", "y"],
        "months": [1, 2],
        "since": "2024-01-31T09:00:00+00:00",
        "day": "2024-01-31",
        "names": ["a", "b"],
    }


def test_bad_new_values_are_reported_with_their_line() -> None:
    text = textwrap.dedent(
        """\
        id: x
        inputs:
          - {id: months, type: array, item_type: int}
          - {id: since, type: datetime}
          - {id: day, type: date}
        tasks: [{id: a, image: i}]
        """
    )
    with pytest.raises(InputError) as caught:
        resolve_inputs(etl(text), {"months": "1,two", "since": "now", "day": "today"})
    assert str(caught.value).splitlines() == [
        "flows/etl.yml:3: input 'months': item 2: expected an int, got 'two'",
        "flows/etl.yml:4: input 'since': expected an ISO 8601 date and time like 2024-01-31T10:00:00Z, got 'now'",
        "flows/etl.yml:5: input 'day': expected a date like 2024-01-31, got 'today'",
    ]


def test_an_array_default_is_checked_with_its_item_type() -> None:
    text = "id: x\ninputs: [{id: n, type: array, item_type: int, default: [1, 2]}]\ntasks: [{id: a, image: i}]\n"
    assert resolve_inputs(etl(text), {}) == {"n": [1, 2]}


# --- file inputs -------------------------------------------------------------------------------

FILE_FLOW = """\
id: x
inputs:
  - {id: data, type: file}
  - {id: lookup, type: file, default: lookup/zones.csv}
  - {id: extra, type: file, required: false}
tasks: [{id: a, image: i}]
"""


def flow_in(folder: Path, text: str = FILE_FLOW) -> LoadedFlow:
    return parse_flow(text, path=folder / "flows" / "etl.yml")


@pytest.fixture
def files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory with data, and a flow folder with a default file."""
    work = tmp_path / "work"
    (work / "data").mkdir(parents=True)
    (work / "data" / "green 2024-01.csv").write_text("a,b\n")
    (tmp_path / "flows" / "lookup").mkdir(parents=True)
    (tmp_path / "flows" / "lookup" / "zones.csv").write_text("zone\n")
    monkeypatch.chdir(work)
    return tmp_path


def test_a_file_input_is_its_path_in_the_workspace(files: Path) -> None:
    loaded = flow_in(files)
    given = {"data": "data/green 2024-01.csv"}
    assert resolve_inputs(loaded, given) == {
        "data": "/workspace/inputs/data/green 2024-01.csv",
        "lookup": "/workspace/inputs/lookup/zones.csv",
        "extra": None,
    }
    assert INPUT_FILES_PATH == "/workspace/inputs"
    # Given paths start at the current directory, defaults at the flow file's folder.
    assert file_inputs(loaded, given) == {
        "data": files / "work" / "data" / "green 2024-01.csv",
        "lookup": files / "flows" / "lookup" / "zones.csv",
    }
    assert all(path.is_absolute() for path in file_inputs(loaded, given).values())


def test_a_file_input_keeps_the_name_of_a_symlink(files: Path) -> None:
    link = files / "work" / "latest.csv"
    link.symlink_to(files / "work" / "data" / "green 2024-01.csv")
    loaded = flow_in(files)
    assert (
        resolve_inputs(loaded, {"data": "latest.csv"})["data"]
        == "/workspace/inputs/data/latest.csv"
    )
    assert file_inputs(loaded, {"data": "latest.csv"})["data"] == link


def test_an_absolute_file_path_is_used_as_is(files: Path) -> None:
    absolute = files / "flows" / "lookup" / "zones.csv"
    loaded = flow_in(files)
    values = resolve_inputs(loaded, {"data": str(absolute), "extra": str(absolute)})
    assert values["extra"] == "/workspace/inputs/extra/zones.csv"
    assert file_inputs(loaded, {"data": str(absolute)})["data"] == absolute


def test_missing_and_unusable_files_are_reported(
    files: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    loaded = flow_in(files, FILE_FLOW.replace("lookup/zones.csv", "lookup/nope.csv"))
    given = {"data": "data", "extra": "gone.csv"}
    with pytest.raises(InputError) as caught:
        resolve_inputs(loaded, given)
    work, flows = files / "work", files / "flows"
    assert str(caught.value).splitlines() == [
        f"{flows}/etl.yml:3: input 'data': 'data' ({work}/data) is not a file",
        f"{flows}/etl.yml:4: input 'lookup': file 'lookup/nope.csv' ({flows}/lookup/nope.csv) does not exist",
        f"{flows}/etl.yml:5: input 'extra': file 'gone.csv' ({work}/gone.csv) does not exist",
    ]
    with pytest.raises(InputError):
        file_inputs(loaded, given)

    monkeypatch.setattr(os, "access", lambda path, mode: False)
    readable = flow_in(files)
    with pytest.raises(InputError) as caught:
        resolve_inputs(readable, {"data": "data/green 2024-01.csv"})
    assert str(caught.value).splitlines()[0] == (
        f"{flows}/etl.yml:3: input 'data': file 'data/green 2024-01.csv' "
        f"({work}/data/green 2024-01.csv) cannot be read (permission denied)"
    )


def test_a_required_file_input_must_be_given(files: Path) -> None:
    with pytest.raises(InputError) as caught:
        resolve_inputs(flow_in(files), {})
    assert str(caught.value) == (
        f"{files}/flows/etl.yml:3: input 'data' is required: give it with -i data=VALUE"
    )


def test_a_path_with_a_nul_byte_is_an_input_error(files: Path) -> None:
    with pytest.raises(InputError) as caught:
        resolve_inputs(flow_in(files), {"data": "a\x00b"})
    message = str(caught.value)
    assert message.startswith(f"{files}/flows/etl.yml:3: input 'data': file 'a\\x00b' (")
    assert message.endswith("does not exist")
    assert "\x00" not in message
