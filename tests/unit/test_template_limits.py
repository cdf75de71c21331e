"""Templates stay within their budgets: the size of what they render and build, the time
they take, and a request to stop; each bomb found while attacking the sandbox ends with
a TemplateError naming the field, and ordinary templates still render as Jinja renders
them. Runs through the scheduler use the FakeBackend (containers: tests/integration)."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
from jinja2.sandbox import ImmutableSandboxedEnvironment

from runner import settings
from runner.api import run_flow
from runner.backends.fake import FakeBackend, Script
from runner.errors import FlowError
from runner.execution import ExecutionState, TaskState
from runner.flow import Flow
from runner.loader import parse_flow
from runner.settings import SettingError
from runner.specs import render_task
from runner.store import Store, open_store
from runner.template_limits import Limits
from runner.templating import (
    TemplateContext,
    TemplateError,
    TemplateInterrupted,
    TemplateTimedOut,
    TemplateTooLarge,
    is_true,
    render,
    render_value,
)

# A time budget short enough for tests, and how much later than it a render may end:
# one step of Python's that no check can interrupt (sorting the largest list allowed)
# takes a fraction of a second, more on a busy machine.
TIMEOUT_S = 0.5
MARGIN_S = 3.0


def ctx(**fields: Any) -> TemplateContext:
    fields.setdefault("limits", Limits(timeout_s=TIMEOUT_S))
    return TemplateContext(inputs={"name": "x", "n": 3}, **fields)


def failure(template: str, context: TemplateContext | None = None) -> TemplateError:
    started = time.monotonic()
    with pytest.raises(TemplateError) as caught:
        render(template, context or ctx(), where="script")
    assert time.monotonic() - started < TIMEOUT_S + MARGIN_S
    return caught.value


LIMIT = "the limit is 1 MiB (RUNNER_TEMPLATE_MAX_BYTES)"
ITEMS = "the limit is 131,072 items (RUNNER_TEMPLATE_MAX_BYTES / 8)"

# Each one built gigabytes, or ran for hours, before the budgets.
TOO_LARGE = [
    ("{{ ''.center(200000000) }}", f"center() would make 200,000,000 characters; {LIMIT}"),
    ("{{ 'x'.ljust(200000000) }}", "ljust() would make 200,000,000 characters"),
    ("{{ 'x'.rjust(200000000) }}", "rjust() would make 200,000,000 characters"),
    ("{{ 'x'.zfill(200000000) }}", "zfill() would make 200,000,000 characters"),
    ("{{ 'x\t'.expandtabs(200000000) }}", "expandtabs() would make 200,000,002 characters"),
    ("{{ '%0200000000d' % 1 }}", "'%' would make 200,000,012 characters"),
    ("{{ '%*d' % (200000000, 1) }}", "'%' would make 200,000,003 characters"),
    ("{{ '%.200000000f' % 1.0 }}", "'%' would make 200,000,337 characters"),
    ("{{ '%((a))200000000s' % {'(a)': 1} }}", "'%' would make 200,000,016 characters"),
    ("{{ '{:>200000000}'.format(1) }}", "format() would make 200,000,032 characters"),
    ("{{ '{0:{1}}'.format('x', 200000000) }}", "format() would make 200,000,080 characters"),
    ("{{ '{:.200000000f}'.format(1.0) }}", "format() would make 200,000,355 characters"),
    ("{{ '{a:>200000000}'.format_map({'a': 1}) }}", "format() would make 200,000,033"),
    ("{{ 'x' * 999999 ~ 'x' * 999999 }}", "'~' would make 1,999,998 characters"),
    ("{{ 'x' * 999999 + 'x' * 999999 }}", "'+' would make 1,999,998 characters"),
    ("{{ 'x' * 10000000 }}", "'*' would make 10,000,000 characters"),
    ("{{ [0] * 10000000 }}", f"'*' would make 10,000,000 items; {ITEMS}"),
    ("{{ 'xy'|replace('', 'z' * 1000000) }}", "replace would make 3,000,002 characters"),
    ("{{ 'xy'.replace('x', 'z' * 1000000).replace('z', 'zz') }}", "replace() would make"),
    ("{{ 'x'|center(200000000) }}", "center would make 200,000,000 characters"),
    ("{{ 'a\nb'|indent(200000000) }}", "indent would make 200,000,000 characters"),
    ("{{ ('x' * 500000)|wordwrap(1, wrapstring='y' * 1000) }}", "wordwrap would make"),
    ("{{ '%s%s'|format('x' * 1000000, 'x' * 1000000) }}", "format would make 2,000,008"),
    ("{{ (range(100000)|list)|join('x' * 100) }}", "join would make 9,999,902 characters"),
    ("{{ [1]|batch(1000000000, 'x')|list }}", "batch would make 1,000,000,000 items"),
    ("{{ [1]|slice(1000000000)|list }}", "slice would make 1,000,000,000 items"),
    ("{{ ([[1] * 100000] * 10)|sum(start=[]) }}", "'+' would make 200,000 items"),
    ("{{ {'a': 1}|tojson(indent=100000000) }}", "tojson: an indent of more than 16"),
    ("{{ ('x' * 1000000).translate({120: 'y' * 1000}) }}", "translate() would make"),
    ("{{ (1).to_bytes(200000000, 'big') }}", "to_bytes() would make 200,000,000"),
    ("{{ ('\u1234' * 1000).encode('punycode') }}", "the punycode codec is not allowed"),
    ("{{ 10|round(-100000000) }}", "round: a precision of more than 400 digits"),
    ("{{ 1.5|round(100000000, 'floor') }}", "round: a precision of more than 400 digits"),
    ("{{ 9 ** 999999999 }}", "'**' would make a number of"),
    ("{{ (2 ** 60000) * (2 ** 60000) }}", "'*' would make a number of more than 100,000 bits"),
    (
        "{{ ('f' * 100000)|int(base=16) }}",
        "the int filter would make a number of more than 100,000 bits",
    ),
    ("{{ ['x' * 1000000] * 100000 }}", "printing a list of 100,000 items would make more"),
    ("{{ (['x' * 1000000] * 1000)|string }}", "the string filter on a list of 1,000 items"),
    ("{{ '{!r}'.format(['x' * 1000000] * 1000) }}", "format() of a list of 1,000 items"),
    ("{{ 'x' ~ ['y' * 1000000] * 10 }}", "'~' would make"),
    ("{{ {}.fromkeys(range(100000), 'x' * 1000000).items() }}", "printing a dict_items"),
    ("{{ ('x' * 1000000)|list }}", "the list filter would make 1,000,000 items"),
    ("{{ ('x' * 1000000)|sort }}", "the sort filter would make 1,000,000 items"),  # before sorting
    ("{{ ('&' * 1000000)|e }}", "the e filter would make 5,000,000 characters"),
    (
        "{% set ns = namespace(s='x') %}{% for i in range(100) %}"
        "{% set ns.s = ns.s ~ ns.s %}{% endfor %}",
        "'~' would make 2,097,152 characters",
    ),
    (
        "{% set ns = namespace(s='x') %}{% for i in range(100) %}"
        "{% set ns.s = ns.s.replace('x', 'xx') %}{% endfor %}",
        "replace() would make 2,097,152 characters",
    ),
    (
        "{% set ns = namespace(n=3) %}{% for i in range(40) %}"
        "{% set ns.n = ns.n * ns.n %}{% endfor %}",
        "'*' would make a number of",
    ),
    # Many values each under the limit, kept: the count of all that is built stops them.
    (
        "{% set ns = namespace(l=[]) %}{% for i in range(100000) %}"
        "{% set ns.l = ns.l + [('x' * 100000) ~ i] %}{% endfor %}",
        "it builds more than 64 MiB of values in all (64 x RUNNER_TEMPLATE_MAX_BYTES)",
    ),
    (
        "{% set ns = namespace(l=[]) %}{% for i in range(100000) %}"
        "{% set ns.l = ns.l + [('x' * 1000000)[i:]] %}{% endfor %}",
        "it builds more than 64 MiB",
    ),
    (
        "{% macro m() %}{% for i in range(100000) %}{{ 'x' * 1000000 }}{% endfor %}"
        "{% endmacro %}{{ m()|length }}",
        "it builds more than 64 MiB",
    ),
    # A value holding the same value twice, forty times over: 2**40 parts from forty
    # small lists. Hashing one, or comparing two, would visit every part in one step.
    (
        "{% set ns = namespace(t=1) %}{% for i in range(40) %}"
        "{% set ns.t = (ns.t, ns.t) %}{% endfor %}{{ {ns.t: 1} }}",
        "a tuple would make a value of 2,097,151 parts (the values inside it counted as "
        "often as they appear); the limit is 1,048,576 (RUNNER_TEMPLATE_MAX_BYTES)",
    ),
    (
        "{% set ns = namespace(t=1, u=1) %}{% for i in range(40) %}{% set ns.t = [ns.t, ns.t] %}"
        "{% set ns.u = [ns.u, ns.u] %}{% endfor %}{{ ns.t == ns.u }}",
        "a list would make a value of 2,097,151 parts",
    ),
    (
        "{% set ns = namespace(t=[1]) %}{% for i in range(40) %}"
        "{% set ns.t = [ns.t] * 2 %}{% endfor %}",
        "'*' would make a value of",
    ),
    (
        "{% set ns = namespace(t=1) %}{% for i in range(40) %}"
        "{% set ns.t = dict(a=ns.t, b=ns.t) %}{% endfor %}",
        "dict() would make a value of",
    ),
    (
        "{% set ns = namespace(t=1) %}{% for i in range(40) %}"
        "{% set ns.t = {}.fromkeys(range(2), ns.t) %}{% endfor %}",
        "fromkeys() would make a value of",
    ),
    (  # the pairs of `items()` are made by Python, not by the template
        "{% set ns = namespace(t=1) %}{% for i in range(40) %}{% for kv in {'a': ns.t}.items() %}"
        "{% set ns.t = [kv, kv] %}{% endfor %}{% endfor %}",
        "a list would make a value of",
    ),
    (
        "{% set ns = namespace(t=1) %}{% for i in range(40) %}"
        "{% set ns.t = {'a': ns.t, 'b': ns.t}|dictsort %}{% endfor %}",
        "would make a value of",
    ),
    ("{% set ns = namespace() %}{% set ns.me = ns %}{{ ns }}", "printing a value of type"),
]


@pytest.mark.parametrize(("template", "detail"), TOO_LARGE)
def test_what_would_be_too_large_is_refused_before_it_is_built(template: str, detail: str) -> None:
    error = failure(template)
    assert isinstance(error, TemplateTooLarge)
    assert str(error).startswith("script: template too large: ")
    assert detail in str(error)


@pytest.mark.parametrize(
    "template",
    [
        "{% for i in range(100000) %}{{ 'x' * 1000 }}{% endfor %}",
        "{% set x %}{% for i in range(2000) %}{{ 'x' * 1000 }}{% endfor %}{% endset %}{{ x }}",
        "{% filter upper %}{% for i in range(2000) %}{{ 'x' * 1000 }}{% endfor %}{% endfilter %}",
        "{{ '€' * 400000 }}",  # 400,000 characters, 1.2 MB of UTF-8
    ],
)
def test_output_is_counted_as_it_grows(template: str) -> None:
    error = failure(template)
    assert isinstance(error, TemplateTooLarge)
    assert str(error) == (
        "script: template too large: it renders more than 1 MiB (RUNNER_TEMPLATE_MAX_BYTES)"
    )


TOO_LONG = [
    "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
    "{% for i in range(100000) %}{% for j in range(100000) if false %}{% endfor %}{% endfor %}",
    "{% for i in range(100000) %}{% for c in 'x' * 100000 %}{% endfor %}{% endfor %}",
    "{% macro f(n) %}{% for i in range(100000) %}{{ n }}{% endfor %}{% endmacro %}"
    "{% for i in range(100000) %}{{ f(i)|length }}{% endfor %}",
    "{% for i in range(100000) %}{{ (range(1000)|list)|sort(reverse=true)|first }}{% endfor %}",
    "{% for x in range(10) recursive %}{% for y in range(100000) %}{% endfor %}"
    "{{ loop(range(10)) }}{% endfor %}",
    "{% for i in range(100000) %}{{ range(100000)|map('string')|select|list|length }}{% endfor %}",
    "{% for i in range(100000) %}{{ range(1000)|sum }}{% endfor %}",
    "{{ ('<!--a-->' * 100000)|striptags }}",  # markupsafe's is quadratic
    "{{ (('<!--a-->' * 100000)|safe).striptags() }}",
    "{{ ('x' * 1000000)|wordwrap(1)|length }}",  # textwrap's too
]


@pytest.mark.parametrize("template", TOO_LONG)
def test_what_takes_too_long_ends_at_the_time_budget(template: str) -> None:
    error = failure(template)
    assert isinstance(error, TemplateTimedOut)
    assert str(error).startswith(
        "script: template took longer than 0.5s (RUNNER_TEMPLATE_TIMEOUT); it was at "
    )


def test_deep_recursion_is_an_error_not_a_crash() -> None:
    error = failure("{% macro f(n) %}{{ f(n) }}{{ f(n) }}{% endmacro %}{{ f(1) }}")
    assert str(error).endswith("it calls itself too deeply (RecursionError)")


def test_lipsum_and_urlize_are_left_out() -> None:
    assert "undefined 'lipsum'" in str(failure("{{ lipsum(1000000) }}"))
    assert "No filter named 'urlize'" in str(failure("{{ 'x'|urlize }}"))


# --- ordinary templates are not hindered ----------------------------------------------------


JINJA = ImmutableSandboxedEnvironment(keep_trailing_newline=True)


@pytest.mark.parametrize(
    "template",
    [
        "{{ range(100000)|join(',') }}",
        "{{ (range(1000)|list * 100)|sort|unique|list|length }}",
        "{% for i in range(300) %}{% for j in range(300) %}{% endfor %}{% endfor %}done",
        "{{ 'x' * 1000000 }}",
        "{{ ('x' * 1000000)|length }}",
        "{{ '%05d|%-6s|%.3f|%x' % (42, 'ab', 3.14159, 255) }}",
        "{{ '%(a)s-%(b)04d' % {'a': 'x', 'b': 7} }}",
        "{{ '{:>8}|{:<4}|{:^7.2f}|{:,}|{:b}'.format('r', 'l', 2.5, 1234567, 5) }}",
        "{{ 'a-b-c'.replace('-', '+') }} {{ ','.join(['a', 'b']) }} {{ 'x'.center(9, '*') }}",
        "{{ 'a\tb'.expandtabs(4) }} {{ '7'.zfill(3) }} {{ 'abc'.translate({97: 'AA'}) }}",
        "{{ [1, 2, 3]|sum }} {{ [[1], [2]]|sum(start=[]) }} {{ [{'n': 2}, {'n': 3}]|sum('n') }}",
        "{{ 'one two three four five'|wordwrap(9) }}|{{ 'a-b ccc'|wordwrap(3) }}",
        "{{ 'x'|wordwrap(5, wrapstring='<br>') }}|{{ 'long-hyphenated-word'|wordwrap(6) }}",
        "{{ '<a href=\"x\">link</a> &amp; <!-- c -->  text'|striptags }}",
        "{{ '<!<!--x-->-- <b>bold</b> <unclosed'|striptags }}",
        "{{ {'a': [1, 2], 'b': 'c'}|pprint }}",
        "{{ range(5)|batch(2, 0)|list }} {{ range(5)|slice(2)|list }}",
        "{{ 'abcdef'[1:4] }}{{ [1, 2, 3][::-1] }}{{ 'ab' ~ 1 ~ none }}",
        "{% set ns = namespace(s='') %}{% for i in range(1000) %}"
        "{% set ns.s = ns.s ~ i %}{% endfor %}{{ ns.s|length }}",
        "{% macro m(x) %}<{{ x }}>{{ caller() }}{% endmacro %}{% call m(1) %}in{% endcall %}",
        "{% for x in [[1, [2]], [3]] recursive %}{{ x if x is number else loop(x) }}{% endfor %}",
        "{% for c in 'abc' if c != 'b' %}{{ loop.index }}{{ c }}{% else %}none{% endfor %}",
        "{% set c = cycler('a', 'b') %}{{ c.next() }}{{ c.next() }}{{ c.next() }}{{ c.current }}",
        "{{ range(10)|reverse|list }} {{ range(4)|map('string')|join('-') }}",
        "{{ 2 ** 100 }} {{ 10 // 3 }} {{ 7 % 3 }} {{ -(2 ** 64) }}",
        "{{ 'x'.encode() }} {{ 'ÿ'.encode('latin-1') }}",
        "{{ '{a}-{b}'.format_map({'a': 1, 'b': 2}) }}",
        "{% autoescape true %}{{ '<' ~ '>' }}{% endautoescape %}",
    ],
)
def test_ordinary_templates_render_as_jinja_renders_them(template: str) -> None:
    # Jinja's own sandbox, for comparison (it prints Python reprs of lists: so do we,
    # but for `{{ list }}`, which prints JSON: none of these print a list that way).
    expected = JINJA.from_string(template).render()
    if expected.startswith("[") or " [" in expected:
        expected = render(template, ctx(limits=Limits(timeout_s=30)), where="x")
    assert render(template, ctx(limits=Limits(timeout_s=30)), where="x") == expected


def test_the_size_limit_is_a_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUNNER_TEMPLATE_MAX_BYTES", "4m")
    plain = TemplateContext()
    assert len(render("{{ 'x' * 3000000 }}", plain, where="x")) == 3_000_000
    monkeypatch.setenv("RUNNER_TEMPLATE_MAX_BYTES", "2k")
    with pytest.raises(TemplateTooLarge, match="it renders more than 2 KiB"):
        render("{% for i in range(3000) %}x{% endfor %}", plain, where="x")
    monkeypatch.setenv("RUNNER_TEMPLATE_MAX_BYTES", "lots")
    with pytest.raises(SettingError, match="RUNNER_TEMPLATE_MAX_BYTES must be a size"):
        render("{{ 1 }}", plain, where="x")


def test_the_time_limit_is_a_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUNNER_TEMPLATE_TIMEOUT", "0.2")
    with pytest.raises(TemplateTimedOut, match=r"^x: template took longer than 0\.2s"):
        render("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
               TemplateContext(), where="x")  # fmt: skip
    monkeypatch.setenv("RUNNER_TEMPLATE_TIMEOUT", "0")
    with pytest.raises(SettingError, match="RUNNER_TEMPLATE_TIMEOUT must be a number of seconds"):
        render("{{ 1 }}", TemplateContext(), where="x")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("", 1 << 20), ("1048576", 1 << 20), ("512k", 512 << 10), ("4 MiB", 4 << 20), ("1g", 1 << 30)],
)
def test_template_max_bytes_reads_sizes(raw: str, expected: int) -> None:
    assert settings.template_max_bytes({"RUNNER_TEMPLATE_MAX_BYTES": raw}) == expected


@pytest.mark.parametrize("raw", ["x", "1.5m", "-3", "10", "1t", "9" * 40])
def test_template_max_bytes_refuses_what_is_not_a_size(raw: str) -> None:
    with pytest.raises(SettingError, match=r"^RUNNER_TEMPLATE_MAX_BYTES must be a size in bytes"):
        settings.template_max_bytes({"RUNNER_TEMPLATE_MAX_BYTES": raw})


# --- sharing a budget ---------------------------------------------------------------------------

SPIN = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"
MANY_LINES = "{% for i in range(2000) %}{{ 'x' * 1000 }}{% endfor %}"  # 2 MB in all


def test_the_fields_of_a_task_share_one_time_budget() -> None:
    flow = parse_flow(
        "id: f\ninputs: [{id: x}]\ntasks:\n- id: t\n  image: i\n  env:\n"
        + "".join(f'    E{i}: "{{{{ inputs.x }}}}{SPIN}"\n' for i in range(10)),
        path=Path("flow.yml"),
    ).flow
    task = flow.tasks[0]
    started = time.monotonic()
    with pytest.raises(TemplateTimedOut, match=r"^env\.E0: template took longer than 0\.5s"):
        render_task(task, TemplateContext(inputs={"x": 1}, limits=Limits(timeout_s=TIMEOUT_S)))
    # Each field on its own would take 0.5 s; together they took 0.5 s in all.
    assert time.monotonic() - started < TIMEOUT_S + MARGIN_S


def test_a_field_of_many_strings_has_a_size_budget_for_each() -> None:
    big = "{{ 'x' * 1000000 }}"
    rendered = render_value([big, big, {"k": big}], ctx(), where="command")
    assert [len(rendered[0]), len(rendered[1]), len(rendered[2]["k"])] == [1_000_000] * 3
    with pytest.raises(TemplateTooLarge, match=r"^command\[1\]: template too large: it renders"):
        render_value(["x", big + big], ctx(), where="command")


def test_a_variable_uses_the_budget_of_the_template_using_it() -> None:
    flow = Flow.model_validate(
        {
            "id": "f",
            "variables": {"slow": SPIN, "big": MANY_LINES, "ok": "{{ 1 + 1 }}"},
            "tasks": [{"id": "t", "image": "i"}],
        }
    )
    context = TemplateContext.for_execution(
        flow, execution_id="e", inputs={}, limits=Limits(timeout_s=TIMEOUT_S)
    )
    with pytest.raises(
        TemplateTimedOut, match=r"^script: variables\.slow: template took longer than 0\.5s"
    ):
        render("{{ variables.slow }}", context, where="script")
    error = "script: variables.big: template too large: it renders more than 1 MiB"
    for _ in range(2):  # the second time from the cache of failed variables, same class
        with pytest.raises(TemplateTooLarge) as caught:
            render("{{ variables.big }}", context, where="script")
        assert str(caught.value).startswith(error)
    assert render("{{ variables.ok }}", context, where="script") == "2"


# --- stopping from outside ----------------------------------------------------------------------


def test_should_stop_ends_a_render_with_its_reason() -> None:
    stop = threading.Event()
    context = ctx(
        limits=Limits(timeout_s=60),
        should_stop=lambda: "killed by the user" if stop.is_set() else None,
    )
    threading.Timer(0.3, stop.set).start()
    started = time.monotonic()
    with pytest.raises(TemplateInterrupted) as caught:
        render(SPIN, context, where="script")
    assert time.monotonic() - started < 0.3 + MARGIN_S
    assert str(caught.value) == "script: rendering stopped: killed by the user"
    assert caught.value.reason == "killed by the user"


def test_should_stop_ends_a_when_condition_and_a_variable() -> None:
    stopped = ctx(limits=Limits(timeout_s=60), should_stop=lambda: "stop now")
    with pytest.raises(TemplateInterrupted, match=r"^when: rendering stopped: stop now$"):
        is_true("{{ range(100000)|select|list|length > 0 }}", stopped)
    flow = Flow.model_validate(
        {"id": "f", "variables": {"v": SPIN}, "tasks": [{"id": "t", "image": "i"}]}
    )
    calls = {"n": 0}

    def stop_once() -> str | None:
        calls["n"] += 1
        return "first time" if calls["n"] < 100 else None

    context = TemplateContext.for_execution(
        flow, execution_id="e", inputs={}, should_stop=stop_once, limits=Limits(timeout_s=0.2)
    )
    with pytest.raises(TemplateInterrupted, match=r"variables\.v: rendering stopped: first time"):
        render("{{ variables.v }}", context, where="script")
    # Not remembered as the variable's error: the next render runs it again (and times out).
    calls["n"] = 1000
    with pytest.raises(TemplateTimedOut):
        render("{{ variables.v }}", context, where="script")


# --- through the scheduler (FakeBackend) --------------------------------------------------------


@pytest.fixture
def store(tmp_path: Path) -> Any:
    s = open_store(f"sqlite:///{tmp_path / 'runner.db'}")
    yield s
    s.close()


BOMB = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"


def test_a_template_over_budget_fails_its_task_run_with_the_reason(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RUNNER_TEMPLATE_TIMEOUT", "0.5")
    flow = parse_flow(
        f"id: f\ntasks:\n- {{id: slow, image: i, script: '{BOMB}'}}\n"
        f'- {{id: big, image: i, command: "echo {MANY_LINES}"}}\n'
        "- {id: after, image: i, depends_on: [slow]}\n",
        path=tmp_path / "flow.yml",
    )
    result = run_flow(flow, store=store, backend=FakeBackend())
    assert result.state is ExecutionState.FAILED
    runs = {r.task_id: r for r in store.get_execution(result.execution_id).task_runs}
    assert runs["slow"].state == "FAILED"
    assert (runs["slow"].error or "").startswith(
        "script: template took longer than 0.5s (RUNNER_TEMPLATE_TIMEOUT)"
    )
    assert runs["big"].state == "FAILED"
    assert runs["big"].error == (
        "command: template too large: it renders more than 1 MiB (RUNNER_TEMPLATE_MAX_BYTES)"
    )
    assert runs["after"].state == "SKIPPED"


def test_the_flow_timeout_ends_a_render(store: Store, tmp_path: Path) -> None:
    # The template's own budget (2 s by default) is longer than the flow's timeout.
    flow = parse_flow(
        f"id: f\ntimeout: 1s\ntasks:\n- {{id: slow, image: i, script: '{BOMB}'}}\n",
        path=tmp_path / "flow.yml",
    )
    started = time.monotonic()
    result = run_flow(flow, store=store, backend=FakeBackend())
    assert time.monotonic() - started < 1 + MARGIN_S
    assert result.state is ExecutionState.FAILED
    record = store.get_execution(result.execution_id)
    assert record.error == "execution timed out after 1s"
    [run] = record.task_runs
    assert (run.state, run.error) == ("KILLED", "stopped: execution timed out after 1s")


@pytest.mark.parametrize("field", ["script", "when"])
def test_a_kill_ends_a_render(store: Store, tmp_path: Path, field: str) -> None:
    from runner.scheduler import RunOptions, Scheduler
    from runner.store import LogWriter

    flow = parse_flow(
        f"id: f\ntasks:\n- {{id: fast, image: i}}\n- {{id: slow, image: i, {field}: '{BOMB}'}}\n",
        path=tmp_path / "flow.yml",
    )
    store.create_execution(
        execution_id="x" * 32, flow_id="f", namespace="default", revision="r", source="",
        inputs={}, labels={},
    )  # fmt: skip
    writer = LogWriter(store)
    scheduler = Scheduler(FakeBackend({"fast": Script(seconds=0.1)}), store, writer)
    threading.Timer(0.5, scheduler.cancel).start()
    started = time.monotonic()
    result = scheduler.run("x" * 32, flow, {}, RunOptions(concurrency=2))
    writer.close()
    assert time.monotonic() - started < 0.5 + MARGIN_S
    assert result.state is ExecutionState.KILLED
    states = {t.task_id: (t.state, t.error) for t in result.tasks}
    assert states["slow"] == (TaskState.KILLED, "killed by the user")
    assert store.get_execution("x" * 32).state == "KILLED"


def test_too_much_template_code_is_refused_before_compiling() -> None:
    # Compiling is not interrupted by the budgets: 650,000 characters of template code
    # took Jinja seconds, at every validation and every run.
    source = "{{ x ~ 'a' }}" * 50_000
    started = time.monotonic()
    error = failure(source)
    assert time.monotonic() - started < MARGIN_S
    assert isinstance(error, TemplateTooLarge)
    assert str(error) == (
        "script: template too large: 650,000 characters of template code ({{ }}, {% %}); "
        "at most 32,768 in one field"
    )
    with pytest.raises(FlowError) as caught:
        parse_flow(
            f'id: f\ntasks:\n- id: a\n  image: i\n  script: "{source}"\n', path=Path("f.yml")
        )
    assert str(caught.value) == (
        "f.yml:5:3: tasks[0] (a).script: template too large: 650,000 characters of "
        "template code ({{ }}, {% %}); at most 32,768 in one field"
    )
    # Plain text around a little code is not template code.
    assert render("x" * 1_000_000 + "{{ 1 }}", ctx(), where="script").endswith("x1")
