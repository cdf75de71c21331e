"""Templates: what they can use, how they fail (strictly, naming the field, the expression
and what is defined), the sandbox, lazy variables, `when:`, and the checks of `validate`."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

import runner.templating as templating
from runner.errors import FlowError, RunnerError
from runner.flow import Flow, Task
from runner.loader import parse_flow
from runner.template_checks import find_template_problems, reads_outputs, referenced_outputs
from runner.templating import (
    TemplateContext,
    TemplateError,
    is_true,
    render,
    render_value,
)

FLOW = """\
id: etl
namespace: taxi
inputs:
  - id: color
  - {id: rows, type: int, default: 100}
  - {id: flag, type: bool, default: false}
variables:
  file: "{{ inputs.color }}_{{ variables.month }}.csv"
  month: "2024-01"
allowed_env: [HOME, UNSET_NAME]
tasks:
  - id: extract
    image: alpine
    command: "echo extract"
  - id: process
    image: alpine
    depends_on: [extract]
    matrix: {year: [2019, 2020], month: [1]}
    command: "echo {{ matrix.year }}"
  - id: load
    image: alpine
    depends_on: [process]
    command: "echo load"
"""


def etl_flow() -> Flow:
    return parse_flow(FLOW, path=Path("flows/etl.yml")).flow


def execution_ctx(**inputs: Any) -> TemplateContext:
    return TemplateContext.for_execution(
        etl_flow(),
        execution_id="e1f2",
        inputs={"color": "green", "rows": 100, "flag": False, **inputs},
        env={"HOME": "/home/me"},
        revision="abc123def456",
        started_at=datetime(2024, 1, 31, 10, 0, tzinfo=UTC),
    )


def load_ctx(**inputs: Any) -> TemplateContext:
    """The context of `load`, after `extract` and both runs of `process` finished."""
    return execution_ctx(**inputs).for_task(
        "load",
        attempt=2,
        outputs={
            "extract": {"rows": 1200, "file": "green_2024-01.csv"},
            "process": {"year=2019,month=1": {"n": 1}, "year=2020,month=1": {"n": 2}},
        },
    )


def fails(template: str, ctx: TemplateContext | None = None, where: str = "command") -> str:
    with pytest.raises(TemplateError) as caught:
        render(template, ctx or load_ctx(), where=where)
    return str(caught.value)


# --- what templates can use -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("{{ inputs.color }}", "green"),
        ("{{ inputs['rows'] + 1 }}", "101"),
        ("{{ variables.file }}", "green_2024-01.csv"),
        ("{{ outputs.extract.rows }}", "1200"),
        ("{{ outputs['extract'].file }}", "green_2024-01.csv"),
        ("{{ outputs.process['year=2020,month=1'].n }}", "2"),
        ("{{ execution.id }}", "e1f2"),
        ("{{ execution.started_at }}", "2024-01-31T10:00:00+00:00"),
        ("{{ flow.id }}.{{ flow.namespace }}@{{ flow.revision }}", "etl.taxi@abc123def456"),
        ("{{ task.id }} {{ task.attempt }} {{ task.name }}", "load 2 load"),
        ("{{ env.HOME }}", "/home/me"),
        ("{{ inputs.flag }}", "false"),
        ("{{ not inputs.flag }}", "true"),
        ("{{ outputs.extract }}", '{"rows": 1200, "file": "green_2024-01.csv"}'),
        ("{{ [1, 'a'] }}", '[1, "a"]'),
        ("{{ none }}", ""),
        ("{% for k in outputs.extract %}{{ k }};{% endfor %}", "rows;file;"),
        ("{{ inputs.missing | default('fallback') }}", "fallback"),
        ("{{ inputs.missing is defined }}", "false"),
        ("{# a comment #}x", "x"),
    ],
)
def test_every_source_renders(template: str, expected: str) -> None:
    assert render(template, load_ctx(), where="command") == expected


def test_a_matrix_run_sees_its_combination_and_its_run_name() -> None:
    ctx = execution_ctx().for_task("process", matrix={"year": 2019, "month": 1, "full": True})
    assert render("{{ matrix.year }}-{{ matrix.month }}", ctx, where="command") == "2019-1"
    assert render("{{ task.name }}", ctx, where="command") == "process[year=2019,month=1,full=true]"
    named = execution_ctx().for_task("process", matrix={"year": 2019}, name="process[y]")
    assert render("{{ task.name }}", named, where="command") == "process[y]"


def test_names_of_runner_come_before_methods_of_mappings() -> None:
    ctx = TemplateContext(inputs={"items": "mine", "keys": "k"})
    assert render("{{ inputs.items }} {{ inputs.keys }}", ctx, where="x") == "mine k"
    other = TemplateContext(inputs={"a": 1})
    assert (
        render("{% for k, v in inputs.items() %}{{ k }}={{ v }}{% endfor %}", other, where="x")
        == "a=1"
    )


def test_scripts_keep_their_trailing_newline() -> None:
    script = "#!/bin/sh\necho {{ inputs.color }}\n"
    assert render(script, load_ctx(), where="script") == "#!/bin/sh\necho green\n"


def test_shquote_makes_one_shell_word() -> None:
    ctx = TemplateContext(inputs={"name": "it's a file.csv", "files": ["a b", "c"], "n": 3})
    assert render("rm {{ inputs.name | shquote }}", ctx, where="x") == "rm 'it'\"'\"'s a file.csv'"
    assert render("ls {{ inputs.files | shquote }}", ctx, where="x") == "ls 'a b' c"
    assert render("{{ inputs.n | shquote }}", ctx, where="x") == "3"
    assert fails("{{ inputs.nope | shquote }}", ctx).startswith("command: {{ inputs.nope }}: ")


def test_tojson_writes_plain_json() -> None:
    ctx = TemplateContext(inputs={"q": "<a & 'b'>", "ok": True})
    assert render("{{ inputs | tojson }}", ctx, where="x") == '{"q": "<a & \'b\'>", "ok": true}'
    assert render("{{ inputs.ok | tojson }}", ctx, where="x") == "true"


# --- the fast path ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text", ["", "echo hello", "awk '{print $1}' data.txt", "${HOME}/data", "a { b } c"]
)
def test_a_string_without_template_markers_is_returned_as_is(
    text: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_jinja(source: str) -> None:
        raise AssertionError("Jinja must not be touched")

    monkeypatch.setattr(templating, "compile_template", no_jinja)
    assert render(text, TemplateContext(), where="command") is text
    assert render_value([text, {"K": text}], TemplateContext(), where="env") == [text, {"K": text}]


def test_compiled_templates_are_reused() -> None:
    template = "{{ inputs.color }} reuse-check"
    ctx = load_ctx()
    render(template, ctx, where="x")
    hits = templating._compile.cache_info().hits
    render(template, ctx, where="x")
    assert templating._compile.cache_info().hits == hits + 1


# --- strict: undefined names fail, saying what is defined -------------------------------------


@pytest.mark.parametrize(
    ("template", "message"),
    [
        (
            "{{ inputs.colour }}",
            "command: {{ inputs.colour }}: undefined 'colour' (did you mean 'color'?); inputs are: color, rows, flag",
        ),
        (
            "echo {{ outputs.extract.size }}",
            "command: {{ outputs.extract.size }}: 'extract' has no output 'size' (it has: rows, file)",
        ),
        (
            "{{ outputs.load.rows }}",
            "command: {{ outputs.load }}: task 'load' has no outputs: it has not run before this task; outputs are from: extract, process",
        ),
        (
            "{{ outputs.extrct.rows }}",
            "command: {{ outputs.extrct }}: no task 'extrct' (did you mean 'extract'?); outputs are from: extract, process",
        ),
        (
            "{{ outputs.process['year=2021,month=1'].n }}",
            "command: {{ outputs.process['year=2021,month=1'] }}: 'process' has no run 'year=2021,month=1' (it has: year=2019,month=1, year=2020,month=1)",
        ),
        (
            "{{ outputs.process['year=2019,month=1'].m }}",
            "command: {{ outputs.process['year=2019,month=1'].m }}: 'process[year=2019,month=1]' has no output 'm' (it has: n)",
        ),
        (
            "{{ env.UNSET_NAME }}",
            "command: {{ env.UNSET_NAME }}: 'UNSET_NAME' is allowed but not set in the runner's environment",
        ),
        (
            "{{ env.PATH }}",
            "command: {{ env.PATH }}: undefined 'PATH'; env has: HOME (a name must be listed in allowed_env or given with --env)",
        ),
        (
            "{{ matrix.year }}",
            "command: {{ matrix.year }}: undefined 'year'; this task has no matrix",
        ),
        (
            "{{ execution.idd }}",
            "command: {{ execution.idd }}: undefined 'idd' (did you mean 'id'?); execution has: id, started_at, state, failed_tasks",
        ),
        (
            "{{ task.retry }}",
            "command: {{ task.retry }}: undefined 'retry'; task has: id, attempt, name",
        ),
        (
            "{{ variables.flie }}",
            "command: {{ variables.flie }}: undefined 'flie' (did you mean 'file'?); variables are: file, month",
        ),
        (
            "{{ input.color }}",
            "command: {{ input }}: undefined 'input' (did you mean 'inputs'?); templates can use inputs, variables, outputs, execution, flow, trigger, task, env, matrix",
        ),
        (
            "{{ inputs['my key'] }}",
            "command: {{ inputs['my key'] }}: undefined 'my key'; inputs are: color, rows, flag",
        ),
        (
            "{{ inputs.rows.digits }}",
            "command: {{ inputs.rows.digits }}: a value of type int has no attribute 'digits'",
        ),
        (
            "{{ outputs.extract.rows + outputs.extract.file }}",
            "command: {{ outputs.extract.rows + outputs.extract.file }}: TypeError: unsupported operand type(s) for +: 'int' and 'str'",
        ),
        (
            "{{ {'a': 1}.b }}",
            "command: {{ {'a': 1}.b }}: no key 'b' in this mapping (it has: a)",
        ),
    ],
)
def test_undefined_names_fail_with_what_is_defined(template: str, message: str) -> None:
    assert fails(template) == message


def test_messages_for_empty_namespaces() -> None:
    ctx = TemplateContext()
    assert fails("{{ inputs.a }}", ctx) == (
        "command: {{ inputs.a }}: undefined 'a'; this flow declares no inputs"
    )
    assert fails("{{ outputs.a.b }}", ctx) == (
        "command: {{ outputs.a }}: no outputs of 'a'; no task has outputs yet"
    )
    assert fails("{{ execution.id }}", ctx) == (
        "command: {{ execution.id }}: undefined 'id'; execution has: nothing"
    )
    empty = TemplateContext(outputs={"a": {}})
    assert (
        fails("{{ outputs.a.b }}", empty)
        == "command: {{ outputs.a.b }}: 'a' has no output 'b' (it has: none)"
    )


def test_a_multi_line_template_names_the_line() -> None:
    script = "set -e\necho start\necho {{ inputs.colour }}\n"
    assert fails(script, where="script") == (
        "script: line 3: {{ inputs.colour }}: undefined 'colour' (did you mean 'color'?); inputs are: color, rows, flag"
    )
    assert fails("a\n{{ 1 / 0 }}\nb\n", where="script") == (
        "script: line 2: {{ 1 / 0 }}: ZeroDivisionError: division by zero"
    )


@pytest.mark.parametrize(
    ("template", "message"),
    [
        (
            "echo {{ inputs.color }",
            "command: echo {{ inputs.color }: template syntax error: unexpected '}'",
        ),
        (
            "echo\n{% if inputs.flag %}\nx\n",
            "command: line 2: {% if inputs.flag %}: template syntax error: Unexpected end of template. Jinja was looking for the following tags: 'elif' or 'else' or 'endif'. The innermost block that needs to be closed is 'if'.",
        ),
        (
            "{{ inputs.color | shqoute }}",
            "command: {{ inputs.color | shqoute }}: template syntax error: No filter named 'shqoute'.",
        ),
    ],
)
def test_syntax_errors_name_the_template_line(template: str, message: str) -> None:
    assert fails(template) == message


def test_template_error_is_a_runner_error_with_exit_code_2() -> None:
    assert issubclass(TemplateError, RunnerError)
    assert TemplateError.exit_code == 2


# --- the sandbox ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("template", "message"),
    [
        (
            "{{ ''.__class__ }}",
            "command: {{ ''.__class__ }}: access to attribute '__class__' of 'str' object is unsafe",
        ),
        (
            "{{ ''.__class__.__mro__[1].__subclasses__() }}",
            "command: {{ ''.__class__.__mro__[1].__subclasses__() }}: access to attribute '__class__' of 'str' object is unsafe",
        ),
        (
            "{{ cycler.__init__.__globals__ }}",
            "command: {{ cycler.__init__.__globals__ }}: access to attribute '__init__' of 'type' object is unsafe",
        ),
        (
            "{{ inputs._data }}",
            "command: {{ inputs._data }}: undefined '_data'; inputs are: color, rows, flag",
        ),
        (
            "{% set seen = [] %}{{ seen.append(1) }}",
            "command: {% set seen = [] %}{{ seen.append(1) }}: access to attribute 'append' of 'list' object is unsafe",
        ),
        (
            "{{ 'x' * 10000000 }}",
            "command: template too large: {{ 'x' * 10000000 }}: '*' would make 10,000,000 characters; the limit is 1 MiB (RUNNER_TEMPLATE_MAX_BYTES)",
        ),
        (
            "{{ 9 ** 999999999 }}",
            "command: template too large: {{ 9 ** 999999999 }}: '**' would make a number of more than 100,000 bits",
        ),
        (
            "{{ range(10 ** 9) | list }}",
            "command: {{ range(10 ** 9) | list }}: OverflowError: Range too big. The sandbox blocks ranges larger than MAX_RANGE (100000).",
        ),
    ],
)
def test_the_sandbox_refuses_unsafe_operations(template: str, message: str) -> None:
    assert fails(template) == message


def test_small_repetitions_and_powers_are_fine() -> None:
    ctx = TemplateContext()
    assert render(
        "{{ 'ab' * 3 }} {{ 3 * [0] }} {{ 2 ** 10 }} {{ 1 ** 10 ** 9 }}", ctx, where="x"
    ) == ("ababab [0, 0, 0] 1024 1")


# --- variables: lazy, once, cycles --------------------------------------------------------------


def test_variables_are_rendered_lazily_and_at_most_once(monkeypatch: pytest.MonkeyPatch) -> None:
    rendered: list[str] = []
    real = templating._render

    def counting(template: str, names: Any, where: str, *, nested: bool) -> str:
        rendered.append(where)
        return real(template, names, where, nested=nested)

    monkeypatch.setattr(templating, "_render", counting)
    ctx = TemplateContext(
        inputs={"color": "green"},
        variables={"a": "{{ inputs.color }}", "b": "{{ variables.a }}!", "broken": "{{ nope }}"},
    )
    assert render(
        "{{ variables.b }} {{ variables.a }} {{ variables.b }}", ctx, where="command"
    ) == ("green! green green!")
    assert rendered == ["command", "variables.b", "variables.a"]  # never `broken`
    assert ctx.variable("a") == "green"
    assert rendered == ["command", "variables.b", "variables.a"]


def test_task_contexts_of_one_execution_share_rendered_variables(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rendered: list[str] = []
    real = templating._render

    def counting(template: str, names: Any, where: str, *, nested: bool) -> str:
        rendered.append(where)
        return real(template, names, where, nested=nested)

    monkeypatch.setattr(templating, "_render", counting)
    execution = execution_ctx()
    for task_id in ("extract", "load"):
        assert render("{{ variables.file }}", execution.for_task(task_id), where="command") == (
            "green_2024-01.csv"
        )
    assert rendered.count("variables.file") == 1
    other = execution_ctx(color="yellow")  # another execution: its own variables
    assert render("{{ variables.file }}", other.for_task("load"), where="x") == "yellow_2024-01.csv"


def test_variables_render_once_when_threads_race(monkeypatch: pytest.MonkeyPatch) -> None:
    rendered: list[str] = []
    real = templating._render

    def counting(template: str, names: Any, where: str, *, nested: bool) -> str:
        rendered.append(where)
        return real(template, names, where, nested=nested)

    monkeypatch.setattr(templating, "_render", counting)
    ctx = TemplateContext(inputs={"n": 2}, variables={"v": "{{ inputs.n * 21 }}"})
    results: list[str] = []
    threads = [threading.Thread(target=lambda: results.append(ctx.variable("v"))) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == ["42"] * 8
    assert rendered.count("variables.v") == 1


@pytest.mark.parametrize(
    ("variables", "message"),
    [
        ({"a": "{{ variables.b }}", "b": "{{ variables.a }}"}, "variables cycle: a -> b -> a"),
        ({"a": "x{{ variables.a }}"}, "variables cycle: a -> a"),
        (
            {"a": "{{ variables.b }}", "b": "{{ variables.c }}", "c": "{{ variables.a }}"},
            "variables cycle: a -> b -> c -> a",
        ),
    ],
)
def test_a_variables_cycle_is_an_error(variables: dict[str, str], message: str) -> None:
    ctx = TemplateContext(variables=variables)
    with pytest.raises(TemplateError) as caught:
        ctx.variable("a")
    assert str(caught.value) == message
    assert fails("{{ variables.a }}", ctx) == f"command: {message}"
    with pytest.raises(TemplateError) as again:  # the failure is remembered, not re-rendered
        ctx.variable("a")
    assert str(again.value) == message


def test_a_broken_variable_names_itself_in_the_message() -> None:
    ctx = TemplateContext(
        inputs={"color": "green"},
        variables={"file": "{{ inputs.colour }}.csv", "path": "/data/{{ variables.file }}"},
    )
    assert fails("cat {{ variables.path }}", ctx, where="env.FILE") == (
        "env.FILE: variables.file: {{ inputs.colour }}: undefined 'colour' (did you mean 'color'?); inputs are: color"
    )


@pytest.mark.parametrize("name", ["outputs", "task", "matrix"])
def test_variables_cannot_use_task_level_names(name: str) -> None:
    ctx = TemplateContext(variables={"v": f"{{{{ {name}.x }}}}"}, outputs={"x": {}}, task={"x": 1})
    assert fails("{{ variables.v }}", ctx) == (
        f"command: variables.v: {{{{ {name}.x }}}}: variables cannot use '{name}'; "
        "they can use inputs, variables, execution, flow, trigger and env"
    )


def test_variables_that_are_not_strings() -> None:
    ctx = TemplateContext(
        inputs={"color": "green"},
        variables={
            "n": 5,
            "files": ["{{ inputs.color }}.csv", 1],
            "conf": {"c": "{{ inputs.color }}"},
        },
    )
    assert ctx.variable("n") == 5
    assert ctx.variable("files") == ["green.csv", 1]
    assert ctx.variable("conf") == {"c": "green"}
    assert (
        render("{{ variables.files[0] }} {{ variables.conf.c }}", ctx, where="x")
        == "green.csv green"
    )
    with pytest.raises(KeyError):
        ctx.variable("undeclared")


# --- render_value -------------------------------------------------------------------------------


def test_render_value_walks_lists_tuples_and_dict_values() -> None:
    ctx = load_ctx()
    value = {
        "FILE": "{{ outputs.extract.file }}",
        "{{ keys }}": "are not templates",
        "N": 3,
        "LIST": ["a", "{{ task.id }}", ("{{ inputs.rows }}",)],
    }
    assert render_value(value, ctx, where="env") == {
        "FILE": "green_2024-01.csv",
        "{{ keys }}": "are not templates",
        "N": 3,
        "LIST": ["a", "load", ("100",)],
    }
    assert render_value(("echo", "{{ inputs.color }}"), ctx, where="command") == ("echo", "green")
    assert render_value(None, ctx, where="x") is None


@pytest.mark.parametrize(
    ("value", "where", "prefix"),
    [
        ({"FILE": "{{ outputs.extract.nope }}"}, "env", "env.FILE: "),
        ({"my-key": "{{ nope }}"}, "env", "env['my-key']: "),
        (("echo", "{{ nope }}"), "command", "command[1]: "),
        (["a:/a", ["{{ nope }}"]], "volumes", "volumes[1][0]: "),
    ],
)
def test_render_value_names_the_item_that_failed(value: Any, where: str, prefix: str) -> None:
    with pytest.raises(TemplateError) as caught:
        render_value(value, load_ctx(), where=where)
    assert str(caught.value).startswith(prefix + "{{ ")


# --- when: ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("{{ inputs.flag }}", False),
        ("{{ not inputs.flag }}", True),
        ("  {{ inputs.rows > 50 }}\n", True),
        ("{{ inputs.rows - 100 }}", False),
        ("{{ outputs.extract.rows }}", True),
        ("{{ [] }}", False),
        ("{{ {} }}", False),
        ("{{ none }}", False),
        ("{{ outputs.extract }}", True),
        ("{{ 'false' }}", False),
        ("{{ ' No ' }}", False),
        ("{{ 'off' }}", False),
        ("{{ 'None' }}", False),
        ("{{ '' }}", False),
        ("{{ 'yes' }}", True),
        ("{{ inputs.color }}", True),
        ("true", True),
        ("false", False),
        ("FALSE", False),
        ("0", False),
        ("1", True),
        ("x{{ inputs.flag }}", True),
        ("{{ inputs.flag }} ", False),
        ("{% if inputs.rows > 50 %}yes{% endif %}", True),
        ("{% if inputs.rows > 500 %}yes{% endif %}", False),
        ("{{ inputs.flag }}{{ inputs.flag }}", True),  # rendered: "falsefalse"
        ("{{ inputs.color == 'green' and outputs.extract.rows > 1000 }}", True),
    ],
)
def test_is_true(template: str, expected: bool) -> None:
    assert is_true(template, load_ctx(), where="when") is expected


def test_is_true_fails_on_undefined_names() -> None:
    with pytest.raises(TemplateError) as caught:
        is_true("{{ outputs.extract.changed }}", load_ctx())
    assert str(caught.value) == (
        "when: {{ outputs.extract.changed }}: 'extract' has no output 'changed' (it has: rows, file)"
    )
    with pytest.raises(TemplateError) as caught:
        is_true("{{ inputs.rows > 'x' }}", load_ctx())
    assert str(caught.value) == (
        "when: {{ inputs.rows > 'x' }}: TypeError: '>' not supported between instances of 'int' and 'str'"
    )
    with pytest.raises(TemplateError) as caught:
        is_true("{{ inputs.rows > }}", load_ctx())
    assert str(caught.value).startswith("when: {{ inputs.rows > }}: template syntax error: ")


# --- static checks for `runner validate` -------------------------------------------------------

CHECKED = """\
id: checked
inputs:
  - id: color
  - {id: rows, type: int, default: 1}
variables:
  file: "{{ inputs.color }}_{{ variables.month }}.csv"
  month: "{{ variables.file }}"
  uses_outputs: "{{ outputs.extract.rows }}"
  nested: ["{{ inputs.colr }}", {deep: "{{ variables.nope }}"}]
tasks:
  - id: extract
    image: alpine
    command: ["echo", "{{ inputs.colour }}", "{{ outputs.load.rows }}"]
    env:
      OWN: "{{ outputs.extract.file }}"
      FINE: "{{ env.ANY_NAME }} {{ flow.namespace }} {{ task.attempt }} {{ range(3) | list }}"
      BAD: "{{ execution.idd }}"
  - id: load
    image: alpine
    depends_on: [extract]
    when: "{{ outputs.report.ok }}"
    script: |
      echo {{ matrix.year }}
      {% for x in inputs.rows %}{{ x }} {{ loop.index }}{% endfor %}
      {% set local = 1 %}{{ local }} {{ inptus.x }}
    volumes: ["{{ variables.file }}:/data", "x:/{{ outputs.extract.dir }}"]
  - id: process
    image: alpine
    depends_on: [extract]
    matrix: {year: [2019]}
    command: "{{ matrix.year }} {{ matrix.yaer }} {{ outputs['extract'].rows }} {{ outputs.nope.x }}"
    working_dir: "/w/{{ inputs.color }"
  - id: report
    image: alpine
    depends_on: [load, process]
    command: "{{ outputs.load.x }} {{ outputs.extract.y }} {{ x | shqoute }}"
"""

UPSTREAM = {
    "extract": set(),
    "load": {"extract"},
    "process": {"extract"},
    "report": {"extract", "load", "process"},
}


def test_find_template_problems_reports_each_with_its_loc() -> None:
    flow = Flow.model_validate(yaml.safe_load(CHECKED))
    problems = find_template_problems(flow, UPSTREAM.__getitem__)
    scope = "they can use inputs, variables, execution, flow, trigger and env"
    assert problems == [
        (
            ("variables", "uses_outputs"),
            f"{{{{ outputs }}}}: variables cannot use 'outputs'; {scope}",
        ),
        (
            ("variables", "nested", 0),
            "{{ inputs.colr }}: unknown input 'colr' (did you mean 'color'?); inputs are: color, rows",
        ),
        (
            ("variables", "nested", 1, "deep"),
            "{{ variables.nope }}: unknown variable 'nope'; variables are: file, month, uses_outputs, nested",
        ),
        (("variables", "file"), "variables cycle: file -> month -> file"),
        (
            ("tasks", 0, "command", 1),
            "{{ inputs.colour }}: unknown input 'colour' (did you mean 'color'?); inputs are: color, rows",
        ),
        (
            ("tasks", 0, "command", 2),
            "{{ outputs.load }}: task 'extract' uses outputs of 'load', which does not run before it; add it to depends_on",
        ),
        (
            ("tasks", 0, "env", "OWN"),
            "{{ outputs.extract }}: task 'extract' uses its own outputs; a task can only use outputs of tasks that run before it",
        ),
        (
            ("tasks", 0, "env", "BAD"),
            "{{ execution.idd }}: execution has no field 'idd' (did you mean 'id'?); it has: id, started_at, state, failed_tasks",
        ),
        (
            ("tasks", 1, "script"),
            "line 1: {{ matrix.year }}: unknown matrix key 'year'; task 'load' has no matrix",
        ),
        (
            ("tasks", 1, "script"),
            "line 3: {{ inptus }}: unknown name 'inptus' (did you mean 'inputs'?); templates can use inputs, variables, outputs, execution, flow, trigger, task, env, matrix",
        ),
        (
            ("tasks", 1, "when"),
            "{{ outputs.report }}: task 'load' uses outputs of 'report', which does not run before it; add it to depends_on",
        ),
        (
            ("tasks", 2, "command"),
            "{{ matrix.yaer }}: unknown matrix key 'yaer' (did you mean 'year'?); matrix keys are: year",
        ),
        (("tasks", 2, "command"), "{{ outputs.nope }}: unknown task 'nope'"),
        (
            ("tasks", 2, "working_dir"),
            "/w/{{ inputs.color }: template syntax error: unexpected '}'",
        ),
        (
            ("tasks", 3, "command"),
            "{{ outputs.load.x }} {{ outputs.extract.y }} {{ x | shqoute }}: template syntax error: No filter named 'shqoute'.",
        ),
    ]


def test_a_clean_flow_has_no_template_problems() -> None:
    flow = etl_flow()
    upstream = {"extract": set(), "process": {"extract"}, "load": {"extract", "process"}}
    assert find_template_problems(flow, upstream.__getitem__) == []


def test_a_multi_line_syntax_error_names_the_line() -> None:
    flow = Flow.model_validate(
        {"id": "f", "tasks": [{"id": "a", "image": "i", "script": "echo\n{% if x %}\n"}]}
    )
    assert find_template_problems(flow, lambda task_id: set()) == [
        (
            ("tasks", 0, "script"),
            "line 2: {% if x %}: template syntax error: Unexpected end of template. Jinja was looking for the following tags: 'elif' or 'else' or 'endif'. The innermost block that needs to be closed is 'if'.",
        )
    ]


def test_variables_may_use_each_other_without_a_cycle() -> None:
    flow = Flow.model_validate(
        {
            "id": "f",
            "variables": {"a": "{{ variables.b }}", "b": "{{ variables.c }}", "c": "x"},
            "tasks": [{"id": "t", "image": "i", "command": "{{ variables.a }} {{ env.X }}"}],
        }
    )
    assert find_template_problems(flow, lambda task_id: set()) == []


def test_the_static_variables_cycle_reads_in_the_order_of_use() -> None:
    flow = Flow.model_validate(
        {
            "id": "f",
            "variables": {
                "a": "{{ variables.b }}",
                "b": "{{ variables.c }}",
                "c": "{{ variables.a }}",
            },
            "tasks": [{"id": "t", "image": "i"}],
        }
    )
    assert find_template_problems(flow, lambda task_id: set()) == [
        (("variables", "a"), "variables cycle: a -> b -> c -> a")
    ]


# --- referenced_outputs ------------------------------------------------------------------------


def task(**fields: Any) -> Task:
    return Task.model_validate({"id": "t", "image": "i", **fields})


def test_referenced_outputs_finds_every_named_task() -> None:
    t = task(
        command=["echo", "{{ outputs.a.rows }}", "{{ outputs['b'].x }}"],
        env={"E": "{{ outputs.c }}"},
        volumes=["{{ outputs.d.dir }}:/d"],
        when="{{ outputs.e.ok }}",
    )
    assert referenced_outputs(t) == {"a", "b", "c", "d", "e"}
    assert referenced_outputs(task(script="echo {{ outputs.s.x }}\n")) == {"s"}


def test_referenced_outputs_ignores_what_it_cannot_name() -> None:
    assert referenced_outputs(task(command="echo plain")) == set()
    assert referenced_outputs(task(command="{{ outputs[inputs.which].x }}")) == set()
    assert referenced_outputs(task(command="{{ outputs.a.x }")) == set()  # a syntax error
    shadowed = "{% for outputs in [1] %}{{ outputs.a }}{% endfor %}"
    assert referenced_outputs(task(command=shadowed)) == set()


def test_reads_outputs_tells_a_task_that_may_read_other_tasks_outputs() -> None:
    assert reads_outputs(task(command="{{ outputs[inputs.which].x }}"))
    assert reads_outputs(task(env={"ALL": "{{ outputs | tojson }}"}))
    assert reads_outputs(task(when="{{ outputs.a.ok }}"))
    assert reads_outputs(task(command="{{ outputs.a.x }"))  # a syntax error: fails anyway
    assert not reads_outputs(task(command="echo plain"))
    assert not reads_outputs(task(command="echo {{ task.id }}", working_dir="/{{ inputs.d }}"))
    shadowed = "{% for outputs in [1] %}{{ outputs }}{% endfor %}"
    assert not reads_outputs(task(command=shadowed))


def test_the_loader_reports_template_problems_with_their_lines() -> None:
    with pytest.raises(FlowError) as caught:
        parse_flow(CHECKED, path=Path("checked.yml"))
    lines = {(p.line, p.field) for p in caught.value.problems}
    assert (13, "tasks[0] (extract).command[1]") in lines
    assert (17, "tasks[0] (extract).env.BAD") in lines
    assert (21, "tasks[1] (load).when") in lines
    assert (9, "variables.nested[1].deep") in lines
