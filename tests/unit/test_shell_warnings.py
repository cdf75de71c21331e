"""`runner validate` warns where a value given with `-i` reaches shell code unquoted:
`command: echo {{ inputs.name }}` runs `rm -rf ~` for `-i name='x; rm -rf ~'`. Checked at
the loader, whose `LoadedFlow.warnings` the CLI prints (file:line: field: message)."""

from __future__ import annotations

from pathlib import Path

import pytest

from runner.loader import parse_flow

INPUTS = """\
id: f
inputs:
  - id: name
  - {id: typed, type: string}
  - {id: n, type: int}
  - {id: when, type: date}
  - {id: color, type: enum, values: [green, yellow]}
  - {id: spaced, type: enum, values: ["a b", c]}
  - {id: files, type: array}
  - {id: counts, type: array, item_type: int}
  - {id: cfg, type: json}
  - {id: data, type: file}
variables:
  file: "{{ inputs.name }}_x.csv"
  quoted: "{{ inputs.name | shell_quote }}.csv"
  nested: "in/{{ variables.file }}"
tasks:
"""


def warnings_of(tasks: str) -> list[str]:
    loaded = parse_flow(INPUTS + tasks, path=Path("flows/f.yml"))
    return [str(warning) for warning in loaded.warnings]


def test_an_input_in_a_command_string_is_a_warning_with_file_line_and_field() -> None:
    assert warnings_of("  - {id: a, image: i, command: 'echo {{ inputs.name }}'}\n") == [
        "flows/f.yml:18:23: tasks[0] (a).command: {{ inputs.name }} reaches shell code "
        "unquoted: -i name='x; rm -rf ~' would run a command of its own; "
        "write {{ inputs.name | shell_quote }}"
    ]


@pytest.mark.parametrize(
    "expression",
    [
        "inputs.name",
        "inputs.typed",
        "inputs['typed']",
        "inputs.spaced",
        "inputs.files",
        "inputs.files | join(' ')",
        "inputs.cfg.path",
        "inputs.cfg | tojson",  # JSON's double quotes still run $(...)
        "inputs.data",
        "inputs.name ~ '.txt'",
        "inputs.name.upper()",
        "inputs.name if inputs.n else 'x'",
        "inputs.name | default('x') | trim",
        "'%s' % inputs.name",
        "variables.file",
        "variables.nested",
        "inputs",
    ],
)
def test_free_text_reaching_a_shell_is_a_warning(expression: str) -> None:
    found = warnings_of(f'  - {{id: a, image: i, command: "ls {{{{ {expression} }}}}"}}\n')
    assert found and all("reaches shell code unquoted" in line for line in found), found


@pytest.mark.parametrize(
    "expression",
    [
        "inputs.name | shell_quote",
        "inputs.name | shquote",
        "inputs.files | shell_quote",
        "inputs.cfg | tojson | shell_quote",
        "inputs.name | length",
        "inputs.name | int",
        "inputs.name | urlencode",
        "inputs.n",
        "inputs.when",
        "inputs.color",
        "inputs.counts",
        "variables.quoted",
        "inputs.name == 'x'",
        "inputs.name is defined",
        "'yes' if inputs.name else 'no'",
        "execution.id",
        "outputs",
    ],
)
def test_quoted_typed_or_plain_values_are_not_a_warning(expression: str) -> None:
    assert warnings_of(f'  - {{id: a, image: i, command: "ls {{{{ {expression} }}}}"}}\n') == []


def test_a_value_followed_through_set_loops_and_blocks() -> None:
    script = """\
  - id: a
    image: i
    script: |
      {% set x = inputs.name %}
      {% set ns = namespace(y='') %}{% set ns.y = inputs.typed %}
      echo {{ x }}
      echo {{ ns.y }}
      {% for f in inputs.files %}rm {{ f }}{% endfor %}
      {% set block %}{{ inputs.cfg }}{% endset %}echo {{ block }}
      {% filter shell_quote %}{{ inputs.data }}{% endfilter %}
"""
    found = warnings_of(script)
    assert [line.split(": ", 2)[2].split(" reaches")[0] for line in found] == [
        "line 3: {{ x }} (input 'name')",
        "line 4: {{ ns.y }} (input 'typed')",
        "line 5: {{ f }} (input 'files')",
        "line 6: {{ block }} (input 'cfg')",
    ]


@pytest.mark.parametrize(
    ("task", "warns"),
    [
        ("{id: a, image: i, command: [sh, -c, 'echo {{ inputs.name }}']}", True),
        ("{id: a, image: i, command: [/bin/bash, -ec, 'echo {{ inputs.name }}']}", True),
        ("{id: a, image: i, command: [/usr/bin/env, bash, -c, 'echo {{ inputs.name }}']}", True),
        ("{id: a, image: i, command: [echo, '{{ inputs.name }}']}", False),  # no shell
        ("{id: a, image: i, command: [sh, script.sh, '{{ inputs.name }}']}", False),
        ("{id: a, image: i, script: 'echo {{ inputs.name }}'}", True),  # /bin/sh -e
        ("{id: a, image: i, interpreter: bash, script: 'echo {{ inputs.name }}'}", True),
        ("{id: a, image: i, interpreter: python3, script: 'print({{ inputs.name }})'}", False),
        ("{id: a, image: i, env: {X: '{{ inputs.name }}'}, command: 'echo \"$X\"'}", False),
        ("{id: a, image: i, command: 'echo hi', when: '{{ inputs.name }}'}", False),
    ],
)
def test_only_text_a_shell_reads_as_code_counts(task: str, warns: bool) -> None:
    assert bool(warnings_of(f"  - {task}\n")) is warns


def test_errors_and_finally_tasks_are_checked_too() -> None:
    found = warnings_of(
        "  - {id: a, image: i}\n"
        "errors:\n  - {id: e, image: i, command: 'echo {{ inputs.name }}'}\n"
        "finally:\n  - {id: z, image: i, command: 'echo {{ variables.file }}'}\n"
    )
    assert [w.split(": ")[1] for w in found] == ["errors[0] (e).command", "finally[0] (z).command"]


def test_one_warning_per_input_and_field() -> None:
    found = warnings_of(
        "  - {id: a, image: i, command: 'cp {{ inputs.name }} {{ inputs.name }}.bak'}\n"
    )
    assert len(found) == 1


def test_a_flow_without_free_text_inputs_has_no_warnings() -> None:
    loaded = parse_flow(
        "id: f\ninputs: [{id: n, type: int}]\ntasks:\n- {id: a, image: i, command: 'seq {{ inputs.n }}'}\n",
        path=Path("f.yml"),
    )
    assert loaded.warnings == ()


def test_the_example_flows_have_no_warnings() -> None:
    from runner.loader import load_flow

    root = Path(__file__).resolve().parents[2]
    for path in sorted((root / "flows").glob("*.yml")):
        assert load_flow(path).warnings == (), path
