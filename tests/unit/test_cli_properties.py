"""Whatever a flow file or an input value holds, `runner validate` and `runner run` end
with exit 0, 1 or 2 and a message: never a traceback, never an exception out of `main`.

Flow files are mutated from the examples in flows/ and a few small valid flows: lines
deleted, duplicated, swapped or cut short; scalars replaced by random text, numbers,
lists or null; tabs, CRLF, odd unicode, broken indentation, random keys. Input values
given with `-i NAME=VALUE` are random text for every input type.

The CLI runs in this process through its real entry point (`runner.cli.main`, with
click's output isolation) and `RUNNER_DEBUG=1`, so an internal error prints its
traceback and fails the property. A `run` that gets past validation stops where it would
connect to the Docker engine; tests/integration/test_cli_properties_run.py runs those
with real containers.
"""

from __future__ import annotations

import json
import os
import re
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import structlog
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import runner.api
import runner.log_output
from runner.cli import main
from runner.settings import DEBUG_ENV

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = {
    path.name: path.read_text(encoding="utf-8") for path in sorted(REPO.glob("flows/*.yml"))
}

MINIMAL = """\
id: minimal
tasks:
  - id: one
    image: debian:bookworm-slim
    command: "true"
"""

TYPED_INPUTS = """\
id: typed
namespace: props
inputs:
  - {id: count, type: int, default: 3}
  - {id: ratio, type: float, default: 0.5}
  - {id: flag, type: bool, default: false}
  - {id: day, type: date, default: 2024-01-31}
  - {id: moment, type: datetime, default: "2024-01-31T10:00:00Z"}
  - {id: months, type: array, item_type: int, default: [1, 2, 3]}
  - {id: tags, type: array, default: [a, b]}
  - {id: payload, type: json, default: {"a": [1, 2]}}
  - {id: data, type: file, required: false}
  - {id: color, type: enum, values: [green, yellow], default: green}
  - {id: note, type: string, required: false}
tasks:
  - id: show
    image: debian:bookworm-slim
    command: "echo {{ inputs.count }} {{ inputs.color }} {{ inputs.months | join(',') }}"
"""

EVERYTHING = """\
id: everything
namespace: props
description: most fields at once
labels: {team: data}
concurrency: 2
timeout: 1m
env: {TZ: UTC, DEBUG: 1}
allowed_env: [HOME]
variables:
  file: "{{ inputs.color }}.csv"
inputs:
  - {id: color, type: enum, values: [green, yellow], default: green}
defaults:
  image: debian:bookworm-slim
  retry: {attempts: 2, delay: 10ms, backoff: 2.0, on_exit_codes: [1]}
tasks:
  - id: first
    script: |
      echo '::{"outputs": {"rows": 3}}::'
    interpreter: /bin/sh -e
    timeout: 30s
    cpus: 0.5
    memory: 64m
    volumes: ["cache:/cache", "./data:/data:ro"]
    working_dir: /workspace
  - id: second
    depends_on: [first]
    matrix: {year: [2023, 2024], month: [1, 2]}
    when: "{{ inputs.color == 'green' }}"
    command: ["echo", "{{ outputs.first.rows }}", "{{ matrix.year }}"]
    artifacts: ["out/*.txt"]
    allow_failure: true
errors:
  - {id: alert, command: 'echo "failed: {{ execution.failed_tasks | join(", ") }}"'}
finally:
  - {id: cleanup, command: "echo {{ execution.state }}"}
"""

BUILT = """\
id: built
files: [data.csv]
tasks:
  - id: one
    build: ./context
    command: [cat, data.csv]
"""

SEEDS = {
    **EXAMPLES,
    "minimal.yml": MINIMAL,
    "typed.yml": TYPED_INPUTS,
    "everything.yml": EVERYTHING,
    "built.yml": BUILT,
}

INPUT_NAMES = re.findall(r"\{id: (\w+)", TYPED_INPUTS)


# --- running the CLI ----------------------------------------------------------------------


class ReachedEngine(BaseException):
    """Raised where `run` would connect to Docker: the flow and its inputs were accepted.

    A BaseException, so that `main`'s last-resort `except Exception` lets it through."""


@dataclass(frozen=True)
class Outcome:
    args: tuple[str, ...]
    code: object
    """What `main` exited with; None when it reached the engine instead."""
    stdout: str
    stderr: str

    @property
    def reached_engine(self) -> bool:
        return self.code is None

    def describe(self) -> str:
        return f"runner {' '.join(map(repr, self.args))}\nexit {self.code!r}\nstdout:\n{self.stdout}\nstderr:\n{self.stderr}"


def invoke(args: Sequence[str], *, cwd: Path | None = None) -> Outcome:
    """Run the `runner` command in this process, as the console script does."""
    code: object = None
    previous = Path.cwd()
    with CliRunner().isolation(env={DEBUG_ENV: "1"}) as (out, err, _):
        if cwd is not None:
            os.chdir(cwd)
        try:
            main(list(args))
        except SystemExit as exc:
            code = exc.code
        except ReachedEngine:
            code = None
        finally:
            os.chdir(previous)
            sys.stdout.flush()
            sys.stderr.flush()
        stdout = out.getvalue().decode("utf-8", "replace")
        stderr = err.getvalue().decode("utf-8", "replace")
    return Outcome(tuple(args), code, stdout, stderr)


def assert_clean_ending(outcome: Outcome) -> None:
    """Exit 0, 1 or 2 with something said; no traceback, no internal error."""
    said = outcome.stdout + outcome.stderr
    assert "Traceback (most recent call last)" not in said, outcome.describe()
    assert "internal error" not in outcome.stderr, outcome.describe()
    if outcome.reached_engine:
        return
    assert outcome.code in (0, 1, 2), outcome.describe()
    if outcome.code == 0:
        assert outcome.stdout.strip(), outcome.describe()
    else:
        assert outcome.stderr.strip(), outcome.describe()


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder laid out as the repository is, so the example flows find their `build:`
    folders and `files:`; mutated flows are written to flows/flow.yml."""
    root = tmp_path_factory.mktemp("props")
    (root / "flows").mkdir()
    (root / "images").symlink_to(REPO / "images", target_is_directory=True)
    (root / "flows" / "scripts").symlink_to(REPO / "flows" / "scripts", target_is_directory=True)
    (root / "flows" / "context").mkdir()
    (root / "flows" / "context" / "Dockerfile").write_text("FROM debian:bookworm-slim\n")
    (root / "flows" / "data.csv").write_text("a,b\n1,2\n")
    (root / "flows" / "data").mkdir()
    os.mkfifo(root / "flows" / "fifo")
    return root


@pytest.fixture(scope="module", autouse=True)
def no_engine() -> Iterator[None]:
    """`run` stops where it would connect to Docker; structlog is put back as it was
    (`run` configures it to write to the captured stderr)."""

    def reached() -> Any:
        raise ReachedEngine

    saved_backend = runner.api.default_backend
    saved_config = structlog.get_config()
    saved_shortcut = runner.log_output._shortcut
    runner.api.default_backend = reached
    try:
        yield
    finally:
        runner.api.default_backend = saved_backend
        structlog.configure(**saved_config)
        runner.log_output._shortcut = saved_shortcut


def write_flow(workdir: Path, content: bytes) -> Path:
    path = workdir / "flows" / "flow.yml"
    path.write_bytes(content)
    return path


# --- mutated flow files -------------------------------------------------------------------

ODD_TEXT = (
    "\t",
    "\r",
    "\r\n",
    "\x00",
    "\x07",
    "\x1b[31m",
    "\x7f",
    "\x85",
    "\u00a0",
    "\u0301",
    "\u200b",
    "\u202e",
    "\u2028",
    "\u2029",
    "\ufeff",
    "\ufffe",
    "\uffff",
    "\ud800",  # a lone surrogate: written as bytes that are not UTF-8
    "\U0001f600",
    "é",
    "ß",
    "\\",
    '"',
    "'",
    ":",
    ": ",
    "- ",
    "? ",
    "#",
    "&a ",
    "*a",
    "!!str ",
    "!!python/object:os.system ",
    "!custom ",
    "%YAML 1.2",
    "---",
    "...",
    "@",
    "`",
    "{",
    "}",
    "[",
    "]",
    ",",
    "|",
    ">-",
    "<<: *a",
    "{{",
    "}}",
    "{%",
    "{{ inputs.nope }}",
    "{{ outputs.nope.x }}",
)

SPECIAL_SCALARS = (
    "",
    "null",
    "~",
    "[]",
    "{}",
    "[a, 1, null]",
    "{a: 1}",
    "{image: x}",
    "[{id: a}]",
    "yes",
    "no",
    "on",
    "true",
    "-1",
    "0",
    "1e400",
    "-.inf",
    ".nan",
    "0x1F",
    "0o17",
    "1_000",
    "2024-01-31",
    "2024-02-30",
    "2024-01-31T10:00:00Z",
    "10:00",
    "1h30m",
    "PT10M",
    "'quoted'",
    '"tab\\there"',
    '"\\ud800"',
    '"\\x00"',
    "|",
    ">-",
    "!!binary aGk=",
    "!!float abc",
    "!!int 1.5",
    "!!timestamp x",
    "!!bool maybe",
    "!!int ''",
    "!!set {a}",
    "!!omap [a: 1]",
    "*nope",
    "&anchor value",
    "[[[[",
    "{{ inputs.count }}",
    "{{ outputs.nope.x }}",
    "{% for %}",
    "{{ 1/0 }}",
    "{{ ''.__class__ }}",
    "../../etc",
    "/",
    "./data:/data:ro",
    "9" * 5000,
    "a" * 300,
)

FIELD_NAMES = (
    "id",
    "namespace",
    "description",
    "labels",
    "inputs",
    "env",
    "concurrency",
    "defaults",
    "variables",
    "allowed_env",
    "files",
    "timeout",
    "tasks",
    "errors",
    "finally",
    "image",
    "build",
    "pull",
    "script",
    "interpreter",
    "command",
    "volumes",
    "working_dir",
    "user",
    "network",
    "retry",
    "allow_failure",
    "cpus",
    "memory",
    "depends_on",
    "when",
    "matrix",
    "artifacts",
    "type",
    "default",
    "values",
    "item_type",
    "required",
    "attempts",
    "delay",
    "backoff",
    "on_exit_codes",
    "<<",
    "?",
    "1",
    "on",
    "null",
    "",
    "a b",
    "é",
)

# Pieces of Jinja: `{{ outputs.x | shquote }}`, `{% if %}`, unbalanced ones too.
TEMPLATE_BITS = (
    "{{ ",
    " }}",
    "{% ",
    " %}",
    "{# ",
    "inputs",
    "outputs",
    "variables",
    "execution",
    "matrix",
    "env",
    "task",
    ".",
    ".count",
    ".first",
    ".nope",
    "[0]",
    "['a']",
    " | ",
    "shquote",
    "join(',')",
    "tojson",
    "upper",
    "(",
    ")",
    " + ",
    " / 0",
    " if ",
    " else ",
    "range(3)",
    "'x' * 3",
    "__class__",
    "lipsum",
    "1",
    "'",
    '"',
)

templates = st.lists(st.sampled_from(TEMPLATE_BITS), min_size=1, max_size=8).map("".join)

scalars = st.one_of(
    st.sampled_from(SPECIAL_SCALARS),
    templates.map(json.dumps),
    st.text(max_size=12),
    st.integers().map(str),
    st.floats().map(repr),
    st.lists(st.one_of(st.none(), st.integers(), st.text(max_size=6)), max_size=4).map(json.dumps),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=3).map(json.dumps),
)
odd_text = st.one_of(st.sampled_from(ODD_TEXT), st.text(min_size=1, max_size=4))
keys = st.one_of(
    st.sampled_from(FIELD_NAMES), st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,8}", fullmatch=True)
)

Draw = Callable[[st.SearchStrategy[Any]], Any]
Mutation = Callable[[Draw, list[str]], list[str]]

# `key: value`, `- key: value` and `- value` lines, and the values inside `{a: b, c: d}`
_KEY_VALUE = re.compile(r"^(\s*(?:-\s+)?[^\s#:][^#:]*:\s+)(\S.*)$")
_ITEM = re.compile(r"^(\s*-\s+)(\S.*)$")
_INLINE_VALUE = re.compile(r"(?<=: )[^,{}\[\]]+")


def _index(draw: Draw, lines: list[str]) -> int:
    return int(draw(st.integers(0, len(lines) - 1)))


def delete_line(draw: Draw, lines: list[str]) -> list[str]:
    i = _index(draw, lines)
    return lines[:i] + lines[i + 1 :]


def duplicate_line(draw: Draw, lines: list[str]) -> list[str]:
    i = _index(draw, lines)
    return [*lines[: i + 1], lines[i], *lines[i + 1 :]]


def swap_lines(draw: Draw, lines: list[str]) -> list[str]:
    i, j = _index(draw, lines), _index(draw, lines)
    out = list(lines)
    out[i], out[j] = out[j], out[i]
    return out


def cut_short(draw: Draw, lines: list[str]) -> list[str]:
    i = _index(draw, lines)
    keep = draw(st.integers(0, len(lines[i])))
    return [*lines[:i], lines[i][:keep]]


def replace_scalar(draw: Draw, lines: list[str]) -> list[str]:
    candidates = [i for i, line in enumerate(lines) if _KEY_VALUE.match(line) or _ITEM.match(line)]
    if not candidates:
        return lines
    i = draw(st.sampled_from(candidates))
    match = _KEY_VALUE.match(lines[i]) or _ITEM.match(lines[i])
    assert match is not None
    out = list(lines)
    out[i] = match.group(1) + draw(scalars)
    return out


def replace_inline_value(draw: Draw, lines: list[str]) -> list[str]:
    found = [(i, m.span()) for i, line in enumerate(lines) for m in _INLINE_VALUE.finditer(line)]
    if not found:
        return lines
    i, (start, end) = draw(st.sampled_from(found))
    out = list(lines)
    out[i] = lines[i][:start] + draw(scalars) + lines[i][end:]
    return out


def insert_text(draw: Draw, lines: list[str]) -> list[str]:
    i = _index(draw, lines)
    at = draw(st.integers(0, len(lines[i])))
    out = list(lines)
    out[i] = lines[i][:at] + draw(odd_text) + lines[i][at:]
    return out


def reindent(draw: Draw, lines: list[str]) -> list[str]:
    i = _index(draw, lines)
    indent = draw(st.sampled_from(["", " ", "   ", "\t", "  \t", " " * 7, " " * 40]))
    out = list(lines)
    out[i] = indent + lines[i].lstrip(" \t")
    return out


def insert_key(draw: Draw, lines: list[str]) -> list[str]:
    i = _index(draw, lines)
    indent = re.match(r"[ \t-]*", lines[i])
    prefix = indent.group(0).replace("-", " ") if indent else ""
    prefix += draw(st.sampled_from(["", "  ", "- "]))
    out = list(lines)
    out.insert(i + 1, f"{prefix}{draw(keys)}: {draw(scalars)}")
    return out


def line_end(draw: Draw, lines: list[str]) -> list[str]:
    i = _index(draw, lines)
    out = list(lines)
    out[i] += draw(st.sampled_from(["\r", "\t", " ", " # comment", "\\"]))
    return out


MUTATIONS: tuple[Mutation, ...] = (
    delete_line,
    duplicate_line,
    swap_lines,
    cut_short,
    replace_scalar,
    replace_inline_value,
    insert_text,
    reindent,
    insert_key,
    line_end,
)


@st.composite
def mutated_flows(draw: Draw, seeds: Sequence[str] = tuple(SEEDS.values())) -> bytes:
    """The bytes of a flow file: one of the `seeds` with one to four mutations."""
    text = draw(st.sampled_from(seeds))
    lines = text.split("\n")
    for _ in range(draw(st.integers(1, 4))):
        mutation: Mutation = draw(st.sampled_from(MUTATIONS))
        if lines:
            lines = mutation(draw, lines)
    text = "\n".join(lines)
    if draw(st.integers(0, 9)) == 0:
        text = text.replace("\n", "\r\n")
    # surrogatepass: a lone surrogate becomes bytes that are not valid UTF-8
    return text.encode("utf-8", "surrogatepass")


# --- random input values ------------------------------------------------------------------

SPECIAL_VALUES = (
    "",
    " ",
    "0",
    "-0",
    "+7",
    "1.5",
    "1e308",
    "1e309",
    "-inf",
    "nan",
    "NaN",
    "0x10",
    "1_000",
    "9" * 5000,
    "true",
    "YES",
    "off",
    "2",
    "2024-01-31",
    "2024-02-30",
    "20240131",
    "2024-W05",
    "0001-01-01T00:00:00+01:00",
    "9999-12-31T23:59:59-01:00",
    "2024-01-31T25:00:00",
    "2024-01-31 10:00",
    "[1, 2, 3]",
    "[1, 2",
    "[NaN]",
    "[[1]]",
    "[" * 5000 + "]" * 5000,
    "[" * 100_000,
    "1,2,x",
    ",",
    "a,,b",
    '{"a": 1}',
    '{"a": Infinity}',
    "null",
    "green",
    "Green",
    "yelow",
    "data.csv",
    "./data.csv",
    "data",
    "fifo",
    "/dev/null",
    "/proc/self/status",
    "/nonexistent/file.csv",
    "~",
    "\x00",
    "a\x00b",
    "\udcff",  # a byte of argv that is not UTF-8, as Python decodes it
    "\ud800",
    "\u2028",
    "\ufeff1",
    "\U0001f600",
    "{{ inputs.count }}",
)

input_values = st.one_of(
    st.sampled_from(SPECIAL_VALUES),
    st.text(max_size=20),
    st.integers().map(str),
    st.floats().map(str),
    st.dates().map(str),
    st.datetimes(timezones=st.sampled_from([None, UTC, timezone(timedelta(hours=-5))])).map(
        lambda moment: moment.isoformat()
    ),
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=5),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner),
        max_leaves=6,
    ).map(json.dumps),
    st.lists(st.text(max_size=4), max_size=4).map(",".join),
)

input_args = st.one_of(
    st.tuples(st.one_of(st.sampled_from(INPUT_NAMES), st.text(max_size=6)), input_values).map(
        lambda pair: f"{pair[0]}={pair[1]}"
    ),
    st.text(max_size=10),  # often without `=`
)


flags = st.lists(
    st.tuples(
        st.sampled_from(["--concurrency", "--log-format", "--env", "--artifacts-dir", "-i"]),
        st.one_of(
            st.sampled_from(["0", "1", "-1", "json", "console", "", "x=1"]), st.text(max_size=6)
        ),
    ).map(list),
    max_size=2,
).map(lambda pairs: [word for pair in pairs for word in pair])

odd_paths = st.one_of(
    st.sampled_from(
        [
            "",
            " ",
            "missing.yml",
            "flows",
            "flows/data",
            "flows/data.csv",
            "images/python/Dockerfile",
            "/dev/null",
            "/proc/self/status",
            "/",
            "\udcff.yml",
            "-",
            "--",
            "-x",
            "--help",
        ]
    ),
    # a command line cannot carry a NUL byte (click's path check would fail on one)
    st.text(max_size=10).filter(lambda path: "\x00" not in path),
)


def run_args(
    flow: Path | str, db: str, inputs: Sequence[str], extra: Sequence[str] = ()
) -> list[str]:
    args = ["run", str(flow), "--db", db, *extra]
    for value in inputs:
        args += ["-i", value]
    return args


# --- the properties -----------------------------------------------------------------------

FAST = settings(
    deadline=None,
    database=None,  # no .hypothesis/ folder in the working tree; failures print their example
    suppress_health_check=[HealthCheck.too_slow],
)


def test_the_seeds_are_valid_flows(workdir: Path) -> None:
    for name, text in SEEDS.items():
        outcome = invoke(["validate", str(write_flow(workdir, text.encode()))])
        assert outcome.code == 0, f"{name}\n{outcome.describe()}"


@settings(FAST, max_examples=200)
@given(content=mutated_flows())
def test_validate_ends_cleanly_whatever_the_file_holds(workdir: Path, content: bytes) -> None:
    assert_clean_ending(invoke(["validate", str(write_flow(workdir, content))]))


@settings(FAST, max_examples=50)
@given(content=mutated_flows(), inputs=st.lists(input_args, max_size=3))
def test_run_ends_cleanly_on_a_mutated_flow(
    workdir: Path, content: bytes, inputs: list[str]
) -> None:
    flow = write_flow(workdir, content)
    outcome = invoke(run_args(flow, f"sqlite:///{workdir / 'runner.db'}", inputs), cwd=workdir)
    assert_clean_ending(outcome)


@settings(FAST, max_examples=100)
@given(inputs=st.lists(input_args, min_size=1, max_size=4), extra=flags)
def test_run_ends_cleanly_whatever_the_inputs(
    workdir: Path, inputs: list[str], extra: list[str]
) -> None:
    flow = write_flow(workdir, TYPED_INPUTS.encode())
    db = f"sqlite:///{workdir / 'runner.db'}"
    assert_clean_ending(invoke(run_args(flow, db, inputs, extra), cwd=workdir / "flows"))


@settings(FAST, max_examples=40)
@given(path=odd_paths, command=st.sampled_from(["validate", "run"]))
def test_an_odd_flow_path_ends_cleanly(workdir: Path, path: str, command: str) -> None:
    args = (
        [command, path]
        if command == "validate"
        else run_args(path, f"sqlite:///{workdir / 'runner.db'}", [])
    )
    assert_clean_ending(invoke(args, cwd=workdir))


# --- regressions: what the properties found -----------------------------------------------


@pytest.mark.parametrize(
    ("line", "message"),
    [
        # OverflowError from timedelta, out of pydantic as an internal error
        ("timeout: 86400000000000.0", "duration 86400000000000.0 is too long"),
        ("timeout: .inf", "duration inf is too long"),
        ("timeout: P9999999999D", "duration 'P9999999999D' is too long"),
        # longer than a wait or a timer accepts (threading.TIMEOUT_MAX, ~292 years): the
        # run failed later, with a traceback from the timer's thread
        ("timeout: 400000d", "duration '400000d' is too long (at most 36500d, 100 years)"),
        ("timeout: .nan", "a duration must be a number of seconds, not nan"),
        # OverflowError from int(float('inf'))
        pytest.param(
            "memory: " + "9" * 400 + "g", "is larger than Docker takes (8 EiB)", id="memory-inf"
        ),
        ("memory: 99999999999999999999", "is larger than Docker takes (8 EiB)"),
        # PyYAML's constructors fail in odd ways on explicitly tagged text
        ("cpus: !!timestamp x", "cannot read 'x' as timestamp"),
        ("cpus: !!bool maybe", "cannot read 'maybe' as bool"),
        ("cpus: !!int ''", "cannot read '' as int"),
    ],
)
def test_a_bad_task_value_is_one_problem_not_an_internal_error(
    workdir: Path, line: str, message: str
) -> None:
    flow = write_flow(workdir, f"id: x\ntasks:\n  - id: a\n    image: i\n    {line}\n".encode())
    outcome = invoke(["validate", str(flow)])
    assert outcome.code == 2, outcome.describe()
    assert_clean_ending(outcome)
    assert outcome.stderr.count("\n") == 1 and message in outcome.stderr, outcome.describe()
    assert ":5:" in outcome.stderr and "tasks[0] (a)." in outcome.stderr


def test_a_retry_delay_never_grows_past_what_a_wait_accepts() -> None:
    from runner.durations import MAX_DURATION
    from runner.flow import Retry

    retry = Retry.model_validate({"attempts": 100, "delay": "36500d", "backoff": 100})
    assert retry.delay_after(99) == MAX_DURATION.total_seconds() < threading.TIMEOUT_MAX
    capped = Retry.model_validate({"attempts": 3, "delay": "1s", "backoff": 2, "max_delay": "3s"})
    assert [capped.delay_after(n) for n in (1, 2, 3)] == [1.0, 2.0, 3.0]


@pytest.mark.parametrize(
    ("text", "where"),
    [
        (
            "id: x\ntasks:\n  - {id: a, image: i}\nfinally:\n  - {id: f, build: ./empty}\n",
            "5:13: finally[0] (f).build",
        ),
        (
            "id: x\ntasks:\n  - {id: a, image: i}\nerrors:\n  - {id: e, build: ./empty}\n",
            "5:13: errors[0] (e).build",
        ),
        (
            "id: x\ndefaults: {build: ./empty}\ntasks:\n  - {id: a, image: i}\nerrors:\n  - {id: e}\n",
            "2:12: defaults.build",
        ),
    ],
)
def test_a_build_folder_of_an_errors_or_finally_task_is_checked_too(
    workdir: Path, text: str, where: str
) -> None:
    # `errors:` and `finally:` tasks were not looked at: the run failed at build time
    (workdir / "flows" / "empty").mkdir(exist_ok=True)
    flow = write_flow(workdir, text.encode())
    outcome = invoke(["validate", str(flow)])
    assert outcome.code == 2, outcome.describe()
    assert outcome.stderr == (
        f"{flow}:{where}: build folder '{workdir / 'flows' / 'empty'}' has no Dockerfile\n"
    )
