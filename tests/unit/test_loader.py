"""The loader: flow files in, a valid Flow or every problem (with file, line, field) out."""

from __future__ import annotations

import copy
import hashlib
import random
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from runner.errors import FlowError, Problem
from runner.loader import LineMap, LoadedFlow, load_flow, parse_flow
from runner.policy import HostPolicy

GOOD = """\
id: polyglot_etl
namespace: demo
description: text
labels: {team: data}
inputs:
  - {id: rows, type: int, default: 100}
  - {id: color, type: enum, values: [green, yellow], required: true}
env: {TZ: UTC}
concurrency: 4
defaults: {image: debian:bookworm-slim}
tasks:
  - id: extract
    build: images/python
    script: |
      print("hi")
    interpreter: python3
    env: {KEY: value}
    volumes: ["cache:/cache", "./data:/data:ro"]
  - id: load
    command: [echo, done]
    depends_on: [extract]
"""


@pytest.fixture
def flow_dir(tmp_path: Path) -> Path:
    """A folder holding `images/python/Dockerfile`, for flows that use `build:`."""
    (tmp_path / "images" / "python").mkdir(parents=True)
    (tmp_path / "images" / "python" / "Dockerfile").write_text("FROM python:3.12-slim\n")
    return tmp_path


def parse(text: str, folder: Path | None = None, policy: HostPolicy | None = None) -> LoadedFlow:
    path = (folder or Path("/nonexistent")) / "flow.yml"
    return parse_flow(textwrap.dedent(text), path=path, policy=policy or HostPolicy())


def problems(text: str, folder: Path | None = None) -> list[Problem]:
    with pytest.raises(FlowError) as caught:
        parse(text, folder)
    assert caught.value.problems, "a FlowError must carry at least one problem"
    return list(caught.value.problems)


def only(text: str, folder: Path | None = None) -> Problem:
    found = problems(text, folder)
    assert len(found) == 1, "\n".join(map(str, found))
    return found[0]


def where(problem: Problem) -> tuple[int | None, int | None, str]:
    return problem.line, problem.column, problem.field


# --- a good flow -----------------------------------------------------------------------


def test_a_good_flow_loads_with_its_revision_path_and_lines(flow_dir: Path) -> None:
    path = flow_dir / "flow.yml"
    path.write_text(GOOD)
    loaded = load_flow(path)

    assert loaded.flow.id == "polyglot_etl"
    assert loaded.flow.full_id == "demo.polyglot_etl"
    assert [t.id for t in loaded.flow.tasks] == ["extract", "load"]
    assert loaded.path == path and loaded.path.is_absolute()
    assert loaded.base_dir == flow_dir
    assert loaded.source == GOOD
    assert loaded.revision == hashlib.sha256(GOOD.encode()).hexdigest()[:12]
    assert isinstance(loaded.lines, LineMap)
    assert loaded.lines[("tasks", 1, "depends_on")] == (21, 5)
    assert loaded.line_of(("tasks", 0, "build")) == 13
    assert loaded.line_of(("inputs", 1)) == 7
    # a loc that is not in the file falls back to its nearest ancestor that is
    assert loaded.line_of(("tasks", 1, "image")) == 19
    assert loaded.line_of(()) == 1


def test_the_file_is_named_as_the_user_gave_it(
    flow_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(flow_dir)
    Path("flows").mkdir()
    Path("flows/etl.yml").write_text("id: x\ntasks: [{id: a}]\n")
    with pytest.raises(FlowError) as caught:
        load_flow("flows/etl.yml")
    assert str(caught.value) == (
        "flows/etl.yml:2:9: tasks[0] (a): give either `image` (an image reference) "
        "or `build` (a folder with a Dockerfile)"
    )
    Path("flows/etl.yml").write_text("id: x\ntasks: [{id: a, image: i}]\n")
    loaded = load_flow("flows/etl.yml")
    assert loaded.file == "flows/etl.yml"
    assert loaded.path == flow_dir / "flows" / "etl.yml"


def test_revision_changes_with_the_content() -> None:
    one = parse("id: x\ntasks: [{id: a, image: i}]\n")
    two = parse("id: x\ntasks: [{id: a, image: j}]\n")
    assert len(one.revision) == 12 and int(one.revision, 16) >= 0
    assert one.revision != two.revision


def test_crlf_and_a_bom_load_fine(tmp_path: Path) -> None:
    path = tmp_path / "flow.yml"
    path.write_bytes(
        b"\xef\xbb\xbfid: x\r\ntasks:\r\n  - id: a\r\n    image: i\r\n    imagee: j\r\n"
    )
    with pytest.raises(FlowError) as caught:
        load_flow(path)
    assert [where(p) for p in caught.value.problems] == [(5, 5, "tasks[0] (a).imagee")]
    path.write_bytes(b"\xef\xbb\xbfid: x\r\ntasks:\r\n  - id: a\r\n    image: i\r\n")
    loaded = load_flow(path)
    assert loaded.flow.tasks[0].image == "i"
    assert loaded.line_of(("tasks", 0, "image")) == 4
    assert loaded.revision == hashlib.sha256(path.read_bytes()).hexdigest()[:12]


# --- files that cannot be read ---------------------------------------------------------


def test_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FlowError) as caught:
        load_flow(tmp_path / "nope.yml")
    (problem,) = caught.value.problems
    assert problem.file == str(tmp_path / "nope.yml")
    assert problem.message == "no such file"


def test_a_directory(tmp_path: Path) -> None:
    with pytest.raises(FlowError) as caught:
        load_flow(tmp_path)
    assert caught.value.problems[0].message == "this is a folder, not a flow file"


def test_an_unreadable_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(self: Path, *args: object, **kwargs: object) -> bytes:
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "open", refuse)  # chmod 0 does not stop root
    with pytest.raises(FlowError) as caught:
        load_flow(tmp_path / "flow.yml")
    assert caught.value.problems[0].message == "cannot read the file: Permission denied"


def test_a_file_that_is_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "flow.yml"
    path.write_bytes("id: x\ndescription: caf\u00e9\n".encode("latin-1"))
    with pytest.raises(FlowError) as caught:
        load_flow(path)
    (problem,) = caught.value.problems
    assert problem.line == 2
    assert problem.message.startswith("not UTF-8 text: byte 0xe9")


# --- YAML ------------------------------------------------------------------------------


def test_yaml_syntax_error_has_the_line_and_column() -> None:
    problem = only("id: x\ntasks: [{id: a, image: i}\nnamespace: demo\n")
    assert (problem.line, problem.field) == (3, "")
    assert problem.message.startswith("YAML syntax error: ")
    assert "flow sequence" in problem.message
    assert "started at line 2" in problem.message


def test_tabs_for_indentation_are_a_syntax_error_on_their_line() -> None:
    problem = only("id: x\ntasks:\n  - id: a\n\timage: i\n")
    assert (problem.line, problem.column) == (4, 1)
    assert "'\\t'" in problem.message


def test_two_documents_are_refused() -> None:
    problem = only("id: x\n---\nid: y\n")
    assert problem.line == 2
    assert "expected a single document in the stream, but found another document" in problem.message


def test_duplicate_yaml_keys_are_reported_at_the_second_one() -> None:
    found = problems(
        """\
        id: x
        tasks:
          - id: a
            image: one
            env: {A: 1}
            image: two
        id: y
        """
    )
    assert [(p.line, p.column, p.field, p.message) for p in found] == [
        (
            6,
            5,
            "tasks[0] (a).image",
            "duplicate key 'image' (first at line 4); YAML would silently keep only the last",
        ),
        (
            7,
            1,
            "id",
            "duplicate key 'id' (first at line 1); YAML would silently keep only the last",
        ),
    ]


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n", "---\n"])
def test_an_empty_file(text: str) -> None:
    assert only(text).message == "the file is empty; a flow needs at least `id` and `tasks`"


@pytest.mark.parametrize(
    ("text", "described"), [("- a\n- b\n", "a list"), ("just text\n", "'just text'"), ("5\n", "5")]
)
def test_the_top_level_must_be_a_mapping(text: str, described: str) -> None:
    problem = only(text)
    assert problem.line == 1
    assert (
        problem.message
        == f"a flow file must be a mapping of fields (id, tasks, ...), not {described}"
    )


def test_anchors_aliases_and_merge_keys_are_fine() -> None:
    loaded = parse(
        """\
        id: x
        defaults: &base {image: debian, env: {A: "1"}}
        tasks:
          - &first {id: a, image: alpine, env: {B: "2"}}
          - {<<: *first, id: b}
          - {<<: [*first, *base], id: c, env: {C: "3"}}
        """
    )
    a, b, c = loaded.flow.tasks
    assert (b.id, b.image, b.env) == ("b", "alpine", {"A": "1", "B": "2"})
    assert (c.id, c.image, c.env) == ("c", "alpine", {"A": "1", "C": "3"})
    assert a.env == {"A": "1", "B": "2"}


def test_a_merge_key_needs_a_mapping() -> None:
    problem = only("id: x\ntasks:\n  - {<<: 5, id: a, image: i}\n")
    assert (problem.line, problem.field) == (3, "tasks[0] (a)")
    assert problem.message == "`<<` merges a mapping (or a list of mappings) into this one"


def test_a_key_repeated_three_times_gives_two_problems() -> None:
    found = problems("id: x\nid: y\nid: z\ntasks: [{id: a, image: i}]\n")
    assert [(p.line, p.message) for p in found] == [
        (2, "duplicate key 'id' (first at line 1); YAML would silently keep only the last"),
        (3, "duplicate key 'id' (first at line 1); YAML would silently keep only the last"),
    ]


def test_a_recursive_alias_is_a_problem_not_a_hang() -> None:
    problem = only("id: x\nloop: &a [*a]\ntasks: [{id: a, image: i}]\n")
    assert problem.line == 2
    assert "recursive alias" in problem.message


def test_an_alias_bomb_is_refused_quickly() -> None:
    levels = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    levels += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    started = time.monotonic()
    problem = only("\n".join(levels) + "\n")
    assert "more than 250,000 values" in problem.message
    assert time.monotonic() - started < 10


def test_deep_nesting_is_refused() -> None:
    assert "nested" in only("id: x\na: " + "[" * 150 + "]" * 150 + "\n").message
    assert "nested" in only("id: x\na: " + "[" * 1000 + "]" * 1000 + "\n").message


def test_huge_numbers() -> None:
    problem = only("id: x\nconcurrency: " + "9" * 5000 + "\ntasks: [{id: a, image: i}]\n")
    assert (problem.line, problem.field) == (2, "concurrency")
    assert "cannot read" in problem.message and "5000 characters" in problem.message
    big = parse("id: x\nconcurrency: " + "9" * 40 + "\ntasks: [{id: a, image: i}]\n")
    assert big.flow.concurrency.tasks == int("9" * 40)
    # where the format wants text, a long number is just text
    loaded = parse("id: x\ntasks: [{id: a, image: i, env: {N: " + "7" * 5000 + "}}]\n")
    assert loaded.flow.tasks[0].env["N"] == "7" * 5000


def test_unknown_yaml_tags_and_bad_characters() -> None:
    assert "could not determine a constructor" in only("id: !foo x\ntasks: []\n").message
    assert "not supported" in only("id: x\ntasks: !foo [1]\n").message
    problem = only("id: x\x00\n")
    assert (problem.line, problem.column) == (1, 6)


def test_where_the_format_wants_text_numbers_keep_their_spelling() -> None:
    loaded = parse(
        """\
        id: 2024
        tasks:
          - id: 1
            image: python:3.10
            user: 1000
            env: {PYTHON: 3.10, DEBUG: yes, MASK: 0755, BIG: 1e400, DAY: 2024-01-01}
        """
    )
    task = loaded.flow.tasks[0]
    assert (loaded.flow.id, task.id, task.user) == ("2024", "1", "1000")
    assert task.env == {
        "PYTHON": "3.10",
        "DEBUG": "yes",
        "MASK": "0755",
        "BIG": "1e400",
        "DAY": "2024-01-01",
    }


def test_keys_are_names_not_yaml_booleans() -> None:
    loaded = parse("id: x\nlabels: {on: a, no: b, 1: c}\ntasks: [{id: a, image: i}]\n")
    assert loaded.flow.labels == {"on": "a", "no": "b", "1": "c"}


def test_a_key_must_be_a_plain_name() -> None:
    problem = only("id: x\n? [a, b]\n: 1\ntasks: [{id: a, image: i}]\n")
    assert problem.line == 2
    assert problem.message == "a key must be a plain name, not a list or a mapping"


# --- the model -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "id: x\ntaks: []\ntasks: [{id: a, image: i}]\n",
            (2, 1, "taks", "unknown field 'taks' (did you mean 'tasks'?)"),
        ),
        (
            "id: x\ntasks:\n  - id: a\n    imagee: i\n",
            (4, 5, "tasks[0] (a).imagee", "unknown field 'imagee' (did you mean 'image'?)"),
        ),
        (
            "id: x\ninputs:\n  - {id: rows, typ: int}\ntasks: [{id: a, image: i}]\n",
            (3, 16, "inputs[0] (rows).typ", "unknown field 'typ' (did you mean 'type'?)"),
        ),
        (
            "id: x\ndefaults:\n  pul: always\ntasks: [{id: a, image: i}]\n",
            (3, 3, "defaults.pul", "unknown field 'pul' (did you mean 'pull'?)"),
        ),
    ],
)
def test_unknown_fields_with_did_you_mean(text: str, expected: tuple[int, int, str, str]) -> None:
    # A task with `imagee` and no `image` gets only the typo: the model's own checks
    # (image or build) run once its fields are right.
    assert [(p.line, p.column, p.field, p.message) for p in problems(text)] == [expected]


def test_an_unknown_field_without_a_near_miss_lists_the_known_ones() -> None:
    problem = only("id: x\ntasks: [{id: a, image: i, zzz: 1}]\n")
    assert problem.message.startswith(
        "unknown field 'zzz'; known fields: description, image, build,"
    )


def test_missing_ids_point_at_the_parent() -> None:
    found = problems("namespace: demo\ntasks:\n  - image: i\n  - id: b\n    image: i\n")
    assert [(p.line, p.column, p.field, p.message) for p in found] == [
        (1, 1, "id", "required field 'id' is missing"),
        (3, 5, "tasks[0].id", "required field 'id' is missing"),
    ]


def test_missing_tasks_and_an_empty_task_list() -> None:
    assert only("id: x\n").message == "required field 'tasks' is missing"
    problem = only("id: x\ntasks: []\n")
    assert (problem.line, problem.field, problem.message) == (
        2,
        "tasks",
        "a flow needs at least one task",
    )


@pytest.mark.parametrize("bad", ["'my flow'", "-x", ".x", "'x/y'", "'é'"])
def test_bad_ids(bad: str) -> None:
    problem = only(
        f"id: {bad}\ntasks:\n  - id: {bad}\n    image: i\n".replace(
            "\n  - id: " + bad, "\n  - id: ok"
        )
    )
    assert (problem.line, problem.field) == (1, "id")
    assert problem.message.endswith(
        "is not a valid id: use letters, digits, '.', '_' and '-', starting with a letter or a digit"
    )
    problem = only(f"id: x\ntasks:\n  - id: {bad}\n    image: i\n")
    assert (problem.line, problem.column) == (3, 5)
    assert problem.field.startswith("tasks[0]")
    assert problem.field.endswith(".id")


def test_an_id_too_long() -> None:
    problem = only(f"id: {'a' * 201}\ntasks: [{{id: a, image: i}}]\n")
    assert problem.message == "must be at most 200 characters long, got 201"


def test_image_and_build_both_or_neither(flow_dir: Path) -> None:
    found = problems(
        """\
        id: x
        tasks:
          - id: both
            image: alpine
            build: images/python
          - id: neither
            script: echo hi
        """,
        flow_dir,
    )
    assert [(p.line, p.field, p.message) for p in found] == [
        (3, "tasks[0] (both)", "give either `image` or `build`, not both"),
        (
            6,
            "tasks[1] (neither)",
            "give either `image` (an image reference) or `build` (a folder with a Dockerfile)",
        ),
    ]


def test_script_and_command_both() -> None:
    problem = only(
        "id: x\ntasks:\n  - id: a\n    image: i\n    script: echo\n    command: [echo]\n"
    )
    assert (problem.line, problem.field, problem.message) == (
        3,
        "tasks[0] (a)",
        "give either `script` or `command`, not both",
    )


def test_enum_errors_list_the_allowed_values() -> None:
    problem = only("id: x\ntasks:\n  - id: a\n    image: i\n    pull: alway\n")
    assert (problem.line, problem.field) == (5, "tasks[0] (a).pull")
    assert (
        problem.message
        == "expected one of 'missing', 'always', 'never', got 'alway' (did you mean 'always'?)"
    )
    problem = only("id: x\ninputs: [{id: n, type: integer}]\ntasks: [{id: a, image: i}]\n")
    assert problem.field == "inputs[0] (n).type"
    assert problem.message == (
        "expected one of 'string', 'int', 'float', 'bool', 'enum', 'json', 'array', 'datetime', 'date', 'file', 'secret', "
        "got 'integer' (did you mean 'int'?)"
    )


def test_model_value_errors_lose_pydantics_prefix() -> None:
    problem = only("id: x\ntasks: [{id: a, image: i, working_dir: work}]\n")
    assert problem.field == "tasks[0] (a).working_dir"
    assert problem.message == "working_dir must be an absolute path in the container, not 'work'"


def test_a_union_field_gives_one_problem() -> None:
    found = problems(
        """\
        id: x
        tasks:
          - id: a
            image: i
            interpreter: {sh: 1}
          - id: b
            image: i
            command: [echo, [1]]
        """
    )
    assert [(p.line, p.field, p.message) for p in found] == [
        (5, "tasks[0] (a).interpreter", "expected a string or a list of strings, got a mapping"),
        (8, "tasks[1] (b).command[1]", "expected a string, got a list"),
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("id: x\ntasks: 5\n", (2, "tasks", "expected a list of mappings, got 5")),
        ("id: x\ntasks: [5]\n", (2, "tasks[0]", "expected a mapping of fields, got 5")),
        ("id: [1, 2]\ntasks: [{id: a, image: i}]\n", (1, "id", "expected a string, got a list")),
        (
            "id: x\nenv: [A]\ntasks: [{id: a, image: i}]\n",
            (2, "env", "expected a mapping, got a list"),
        ),
        (
            "id: x\nconcurrency: 0\ntasks: [{id: a, image: i}]\n",
            (2, "concurrency", "must be at least 1, got 0"),
        ),
        (
            "id: x\nconcurrency: yes\ntasks: [{id: a, image: i}]\n",
            (
                2,
                "concurrency",
                "expected a number of tasks or a mapping with limit, behavior, tasks; got true",
            ),
        ),
        ("id: x\ntasks: [{id: a, image: ''}]\n", (2, "tasks[0] (a).image", "must not be empty")),
        (
            "id: x\ntasks: [{id: a, image: i, env: {A: null}}]\n",
            (2, "tasks[0] (a).env.A", "expected a string, got nothing (null)"),
        ),
        (
            "id: x\ntasks: [{id: a, image: i, depends_on: b}]\n",
            (2, "tasks[0] (a).depends_on", "expected a list of strings, got 'b'"),
        ),
    ],
)
def test_wrong_shapes_are_problems_not_tracebacks(
    text: str, expected: tuple[int, str, str]
) -> None:
    problem = only(text)
    assert (problem.line, problem.field, problem.message) == expected


# --- volumes ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "volume",
    ["cache:/cache", "./data:/data:ro", "/srv:/srv:rw", "C:/Users/me/Data Engg:/data:ro", "../x:/"],
)
def test_good_volumes(volume: str) -> None:
    # Host paths outside the flow's folder need the operator's leave: see test_policy.py.
    anywhere = HostPolicy(allowed_mounts=("*",))
    loaded = parse(f"id: x\ntasks: [{{id: a, image: i, volumes: ['{volume}']}}]\n", policy=anywhere)
    assert loaded.flow.tasks[0].volumes == (volume,)


@pytest.mark.parametrize(
    "volume", ["cache", "cache:data", "/a:/b:rx", ":/data", "a:/b:ro:rw", "a:b/c"]
)
def test_bad_volume_strings(volume: str) -> None:
    problem = only(
        f"id: x\ntasks:\n  - id: a\n    image: i\n    volumes:\n      - ok:/ok\n      - '{volume}'\n"
    )
    assert (problem.line, problem.column, problem.field) == (7, 9, "tasks[0] (a).volumes[1]")
    assert problem.message.startswith(f"volume {volume!r} is not SOURCE:/TARGET[:ro|rw]")


def test_a_volume_that_is_not_a_string() -> None:
    problem = only("id: x\ntasks: [{id: a, image: i, volumes: [{a: 1}]}]\n")
    assert (problem.field, problem.message) == (
        "tasks[0] (a).volumes[0]",
        "expected a string, got a mapping",
    )


# --- inputs ----------------------------------------------------------------------------


def test_input_problems() -> None:
    found = problems(
        """\
        id: x
        inputs:
          - {id: rows, type: int, default: abc}
          - {id: color, type: enum}
          - {id: rows}
          - {id: size, values: [a]}
        tasks: [{id: a, image: i}]
        """
    )
    assert [(p.line, p.field, p.message) for p in found] == [
        (3, "inputs[0] (rows)", "default: expected an int, got 'abc'"),
        (4, "inputs[1] (color)", "an enum input needs `values`, the list of accepted values"),
        (5, "inputs[2] (rows).id", "duplicate input id 'rows' (first used by inputs[0])"),
        (6, "inputs[3] (size)", "`values` only applies to inputs of type enum (or arrays of enum)"),
    ]


# --- the task graph --------------------------------------------------------------------


def test_duplicate_task_ids() -> None:
    problem = only(
        "id: x\ntasks:\n  - {id: a, image: i}\n  - {id: b, image: i}\n  - {id: a, image: i}\n"
    )
    assert (problem.line, problem.column, problem.field) == (5, 6, "tasks[2] (a).id")
    assert problem.message == "duplicate task id 'a' (first used by tasks[0])"


def test_unknown_dependency_with_did_you_mean() -> None:
    problem = only(
        """\
        id: x
        tasks:
          - {id: extract, image: i}
          - id: load
            image: i
            depends_on:
              - extract
              - extrct
        """
    )
    assert (problem.line, problem.column, problem.field) == (8, 9, "tasks[1] (load).depends_on[1]")
    assert (
        problem.message == "task 'load' depends on unknown task 'extrct' (did you mean 'extract'?)"
    )


def test_a_self_dependency() -> None:
    problem = only("id: x\ntasks:\n  - {id: a, image: i, depends_on: [a]}\n")
    assert problem.message == "task 'a' depends on itself"


def test_cycles_name_their_tasks() -> None:
    problem = only(
        """\
        id: x
        tasks:
          - {id: start, image: i}
          - {id: a, image: i, depends_on: [start, b]}
          - {id: b, image: i, depends_on: [a]}
        """
    )
    assert (problem.line, problem.field, problem.message) == (
        4,
        "tasks[1] (a).depends_on",
        "cycle: a -> b -> a",
    )
    problem = only(
        """\
        id: x
        tasks:
          - {id: a, image: i, depends_on: [c]}
          - {id: b, image: i, depends_on: [a]}
          - {id: c, image: i, depends_on: [b]}
        """
    )
    assert problem.message == "cycle: a -> b -> c -> a"


def test_graph_problems_are_reported_with_field_problems() -> None:
    found = problems(
        "id: x\ntasks:\n  - {id: a, image: i, pul: x}\n  - {id: b, image: i, depends_on: [aa]}\n"
    )
    assert [p.line for p in found] == [3, 4]
    assert found[1].message == "task 'b' depends on unknown task 'aa' (did you mean 'a'?)"


# --- build folders ---------------------------------------------------------------------


def test_a_build_folder_must_exist_and_hold_a_dockerfile(flow_dir: Path) -> None:
    (flow_dir / "empty").mkdir()
    (flow_dir / "file.txt").write_text("")
    found = problems(
        """\
        id: x
        tasks:
          - {id: ok, build: images/python}
          - {id: nodockerfile, build: ./empty}
          - {id: missing, build: ../elsewhere/img}
          - {id: file, build: file.txt}
        """,
        flow_dir,
    )
    assert [(p.line, p.column, p.field, p.message) for p in found] == [
        (
            4,
            24,
            "tasks[1] (nodockerfile).build",
            f"build folder {str(flow_dir / 'empty')!r} has no Dockerfile",
        ),
        (
            5,
            19,
            "tasks[2] (missing).build",
            f"build folder {str(flow_dir.parent / 'elsewhere' / 'img')!r} does not exist",
        ),
        (
            6,
            16,
            "tasks[3] (file).build",
            f"build path {str(flow_dir / 'file.txt')!r} is not a folder",
        ),
    ]


def test_build_is_relative_to_the_flow_file_not_the_cwd(flow_dir: Path, tmp_path: Path) -> None:
    sub = flow_dir / "flows"
    sub.mkdir()
    (sub / "flow.yml").write_text("id: x\ntasks: [{id: a, build: ../images/python}]\n")
    assert load_flow(sub / "flow.yml").flow.tasks[0].build == "../images/python"


def test_a_build_folder_from_defaults_is_checked_once_there(flow_dir: Path) -> None:
    found = problems(
        "id: x\ndefaults:\n  build: nope\ntasks:\n  - {id: a}\n  - {id: b}\n  - {id: c, image: i}\n",
        flow_dir,
    )
    assert [(p.line, p.field) for p in found] == [(3, "defaults.build")]


# --- defaults --------------------------------------------------------------------------


def test_defaults_merge_into_tasks(flow_dir: Path) -> None:
    loaded = parse(
        """\
        id: x
        defaults:
          image: debian
          pull: always
          env: {A: from-defaults, B: from-defaults}
        tasks:
          - {id: inherits}
          - {id: builds, build: images/python, env: {B: from-task, C: task}}
          - {id: own, image: alpine}
        """,
        flow_dir,
    )
    inherits, builds, own = loaded.flow.tasks
    assert (inherits.image, inherits.pull, inherits.env) == (
        "debian",
        "always",
        {"A": "from-defaults", "B": "from-defaults"},
    )
    assert (builds.image, builds.build) == (None, "images/python")
    assert builds.env == {"A": "from-defaults", "B": "from-task", "C": "task"}
    assert own.image == "alpine"


def test_a_bad_default_is_reported_once_at_defaults() -> None:
    found = problems(
        """\
        id: x
        defaults:
          pull: sometimes
          imagee: i
          env: {A: [1]}
        tasks:
          - {id: a, image: i}
          - {id: b, image: i, env: {B: b}}
        """
    )
    assert [(p.line, p.field) for p in found] == [
        (3, "defaults.pull"),
        (4, "defaults.imagee"),
        (5, "defaults.env.A"),
    ]


def test_an_error_only_inherited_points_at_the_task() -> None:
    found = problems("id: x\ndefaults: {image: i, build: b}\ntasks:\n  - {id: a}\n")
    assert [(p.line, p.field, p.message) for p in found] == [
        (2, "defaults.build", "build folder '/nonexistent/b' does not exist"),
        (4, "tasks[0] (a)", "give either `image` or `build`, not both"),
    ]


# --- all at once -----------------------------------------------------------------------


def test_every_problem_is_reported_at_once_sorted_by_line(flow_dir: Path) -> None:
    text = """\
        id: polyglot etl
        inputs:
          - {id: rows, type: int, default: many}
        defaults: {image: debian}
        tasks:
          - id: extract
            build: images/missing
            volumes: [data]
          - id: transform
            imagee: python
            script: print(1)
            command: [echo]
          - id: load
            depends_on: [transfrom]
        concurrency: -1
        """
    found = problems(text, flow_dir)
    assert [(p.line, p.field) for p in found] == [
        (1, "id"),
        (3, "inputs[0] (rows)"),
        (7, "tasks[0] (extract).build"),
        (8, "tasks[0] (extract).volumes[0]"),
        (10, "tasks[1] (transform).imagee"),
        (14, "tasks[2] (load).depends_on[0]"),
        (15, "concurrency"),
    ]
    assert (
        found[5].message
        == "task 'load' depends on unknown task 'transfrom' (did you mean 'transform'?)"
    )


def test_the_error_message_has_one_line_per_problem() -> None:
    with pytest.raises(FlowError) as caught:
        parse_flow("id: x\ntasks:\n  - {id: a, imagee: i, pul: x}\n", path=Path("flows/etl.yml"))
    assert str(caught.value).splitlines() == [
        "flows/etl.yml:3:13: tasks[0] (a).imagee: unknown field 'imagee' (did you mean 'image'?)",
        "flows/etl.yml:3:24: tasks[0] (a).pul: unknown field 'pul' (did you mean 'pull'?)",
    ]


# --- no input makes a traceback ----------------------------------------------------------

_WEIRD: list[Any] = [
    None,
    0,
    -1,
    10**30,
    1.5,
    float("inf"),
    True,
    "",
    " ",
    "x" * 300,
    "a b",
    "é",
    "C:/x:/y",
    "../nope",
    "\t",
    "$(rm -rf /)",
    [],
    {},
    [1],
    [[[]]],
    {"a": [1]},
    {"id": "z"},
    ["a", None],
    "{{",
    "*x",
    "&a",
]
_TOKENS = [
    ":",
    "- ",
    "[",
    "]",
    "{",
    "}",
    "&a ",
    "*a",
    "!!int ",
    "!foo ",
    '"',
    "'",
    "\t",
    "\n",
    "  ",
    "#",
    "<<: ",
    "? ",
    "|",
    ">",
    "%",
    "@",
    "\x00",
    "\ufeff",
    "\r",
]


def _paths(data: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(data, dict):
        for key, value in data.items():
            found += _paths(value, (*prefix, key))
    elif isinstance(data, list):
        for index, value in enumerate(data):
            found += _paths(value, (*prefix, index))
    return found


def _mutate_data(rng: random.Random, data: Any) -> Any:
    paths = _paths(data)[1:]
    if not paths:
        return data
    path = rng.choice(paths)
    parent = data
    for part in path[:-1]:
        parent = parent[part]
    action = rng.random()
    if action < 0.6:
        parent[path[-1]] = copy.deepcopy(rng.choice(_WEIRD))
    elif action < 0.8:
        del parent[path[-1]]
    elif isinstance(parent, dict):
        key = rng.choice(["idd", "imagee", "x", "tasks", "id", "depends_on", "<<"])
        parent[key] = copy.deepcopy(rng.choice(_WEIRD))
    else:
        parent.append(copy.deepcopy(rng.choice(_WEIRD)))
    return data


def _mutate_text(rng: random.Random, text: str) -> str:
    lines = text.splitlines(keepends=True)
    action = rng.randrange(7)
    at = rng.randrange(len(lines))
    if action == 0:
        del lines[at]
    elif action == 1:
        lines.insert(at, lines[rng.randrange(len(lines))])
    elif action == 2:
        other = rng.randrange(len(lines))
        lines[at], lines[other] = lines[other], lines[at]
    elif action == 3:
        line = lines[at]
        cut = rng.randrange(len(line) + 1)
        lines[at] = line[:cut] + rng.choice(_TOKENS) + line[cut:]
    elif action == 4:
        lines[at] = (" " * rng.randrange(1, 5)) + lines[at]
    elif action == 5:
        lines[at] = lines[at].lstrip(" ")
    else:
        joined = "".join(lines)
        return joined[: rng.randrange(len(joined) + 1)]
    return "".join(lines)


def test_mutated_flows_raise_only_flow_errors(flow_dir: Path) -> None:
    """Thousands of broken variants of a good flow: each loads or raises FlowError, whose
    problems are all in user terms (no pydantic wording, no URL)."""
    rng = random.Random(20240601)
    good = yaml.safe_load(GOOD)
    path = flow_dir / "flow.yml"
    outcomes = {"loaded": 0, "refused": 0}
    for round_ in range(800):
        if round_ % 2:
            text = _mutate_text(rng, GOOD)
            for _ in range(rng.randrange(3)):
                text = _mutate_text(rng, text) if text else text
        else:
            data = copy.deepcopy(good)
            for _ in range(rng.randrange(1, 4)):
                data = _mutate_data(rng, data)
            text = yaml.safe_dump(data, sort_keys=False)
        try:
            loaded = parse_flow(text, path=path)
        except FlowError as exc:
            outcomes["refused"] += 1
            assert exc.problems, text
            for problem in exc.problems:
                assert problem.file == str(path)
                assert problem.message, text
                assert "Value error" not in problem.message, problem
                assert "pydantic" not in problem.message, problem
                assert "Input should" not in problem.message, problem
                assert problem.line is None or problem.line >= 1
        else:
            outcomes["loaded"] += 1
            assert isinstance(loaded, LoadedFlow)
    assert outcomes["loaded"] > 30 and outcomes["refused"] > 300, outcomes


# --- messages: the names written in files, values cut short ---------------------------------


def test_an_unknown_field_names_fields_as_files_spell_them() -> None:
    problem = only("id: x\ntasks: [{id: a, image: i}]\nfinally_: []\n")
    assert problem.message == "unknown field 'finally_' (did you mean 'finally'?)"
    problem = only("id: x\ntasks: [{id: a, image: i}]\nzzzzzz: 1\n")
    assert "finally" in problem.message and "finally_" not in problem.message


@pytest.mark.parametrize(
    "field", ["cpus", "memory", "timeout", "working_dir", "pull", "interpreter", "volumes"]
)
def test_a_huge_value_is_cut_short_in_its_message(field: str) -> None:
    value = "9x" * 100_000
    shown = f"['{value}']" if field == "volumes" else f"'{value}'"
    if field == "interpreter":
        shown = f'"{value} \'unclosed"'  # cannot be split into words
    text = f"id: x\ntasks:\n  - id: a\n    image: i\n    script: s\n    {field}: {shown}\n"
    problem = only(text)
    assert len(problem.message) < 300, problem.message
    assert "(200002 characters)" in problem.message or "..." in problem.message
