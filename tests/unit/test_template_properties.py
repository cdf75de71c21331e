"""Property: whatever template a flow holds, rendering it ends within its budgets.

Hypothesis writes templates from the operations that grow values (`*`, `+`, `~`, `%`,
`format`, `center`, `replace`, `join`, `indent`, `wordwrap`, nesting a value in itself,
...) inside loops, macros that call themselves, `{% set %}` blocks and namespaces that
double at each step, and renders each with a small budget. Every render must end with
its text or a TemplateError (no other exception), give no more text than its size budget,
and end soon after its time budget. The bombs of test_template_limits are examples.
"""

from __future__ import annotations

import time

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from runner.template_limits import Limits
from runner.templating import TemplateContext, TemplateError, render
from tests.unit.test_template_limits import TOO_LARGE, TOO_LONG

TIMEOUT_S = 0.25
# One uninterrupted step of Python's on values of at most 64 KiB is short, and so is
# compiling a template of this size; the rest is for a machine busy with other work
# (measured: up to 1.9 s past the budget on 2 cores with a load average of 15).
MARGIN_S = 3.0

NUMBERS = st.sampled_from([0, 1, 2, 3, 7, 100, 4096, 100_000, 1_000_000, 10**9])
SMALL = st.sampled_from([0, 1, 2, 3, 10, 100])

ATOMS = st.sampled_from(
    [
        "'x'",
        "'ab'",
        "'a\\tb'",
        "'<!--a--><b>'",
        "'€'",
        "'%s%s'",
        "'{0}{0}'",
        "1",
        "7",
        "2 ** 64",
        "[1, 2]",
        "['a', 'b']",
        "{'k': 'v'}",
        "range(100)",
        "range(100000)",
        "ns.v",
        "ns.w",
        "inputs.s",
        "inputs.l",
    ]
)


def _grow(children: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """An expression made of one or two smaller ones (each in parentheses)."""
    e = children.map("({})".format)
    return st.one_of(
        st.builds("{} * {}".format, e, NUMBERS),
        st.builds("{} + {}".format, e, e),
        st.builds("{} ~ {}".format, e, e),
        st.builds("{} % ({}, {})".format, e, e, e),
        st.builds("'%0{}d' % {}".format, NUMBERS, e),
        st.builds("{}.center({})".format, e, NUMBERS),
        st.builds("{}.ljust({})".format, e, NUMBERS),
        st.builds("{}.zfill({})".format, e, NUMBERS),
        st.builds("{}.expandtabs({})".format, e, NUMBERS),
        st.builds("{}.replace('a', {})".format, e, e),
        st.builds("{}.replace('', {})".format, e, e),
        st.builds("'{{:>{}}}'.format({})".format, NUMBERS, e),
        st.builds("'{{:.{}f}}'.format(1.5) ~ {}".format, NUMBERS, e),
        st.builds("'{{0}}{{0}}{{0}}'.format({})".format, e),
        st.builds("{}.join([{}, {}])".format, e, e, e),
        st.builds("{}|center({})".format, e, NUMBERS),
        st.builds("{}|indent({})".format, e, NUMBERS),
        st.builds("{}|join({})".format, e, e),
        st.builds("{}|replace('x', {})".format, e, e),
        st.builds("{}|wordwrap({})".format, e, SMALL),
        st.builds("{}|format({}, {})".format, e, e, e),
        st.builds("{}|list".format, e),
        st.builds("{}|string".format, e),
        st.builds("{}|batch({})|list".format, e, NUMBERS),
        st.builds("{}|slice({})|list".format, e, NUMBERS),
        st.builds("{}|sum".format, e),
        st.builds("{}|sum(start=[])".format, e),
        st.builds("{}|tojson".format, e),
        st.builds("{}|striptags".format, e),
        st.builds("{}|map('string')|list".format, e),
        st.builds("{}|unique|list".format, e),
        st.builds("{}|sort".format, e),
        st.builds("{}|pprint".format, e),
        st.builds("{}|length".format, e),
        st.builds("{}|e".format, e),
        st.builds("{}|round(-{})".format, e, NUMBERS),
        st.builds("({}|safe).striptags()".format, e),
        st.builds("[{}, {}]".format, e, e),
        st.builds("({}, {})".format, e, e),
        st.builds("dict(a={}, b={})".format, e, e),
        st.builds("{{'a': {}, 'b': {}}}".format, e, e),
        st.builds("{}[1:]".format, e),
        st.builds("{} ** {}".format, e, NUMBERS),
        st.builds("{} == {}".format, e, e),
        st.builds("{{{}: 1}}".format, e),
    )


EXPRESSIONS = st.recursive(ATOMS, _grow, max_leaves=6)


def _statements(children: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.one_of(
        st.builds("{}{}".format, children, children),
        st.builds("{{% for i in range({}) %}}{}{{% endfor %}}".format, NUMBERS, children),
        st.builds("{{% for c in {} if c %}}{}{{% endfor %}}".format, EXPRESSIONS, children),
        st.builds(
            "{{% for i in range({}) %}}{{% for j in range({}) %}}{}{{% endfor %}}{{% endfor %}}".format,
            NUMBERS,
            NUMBERS,
            children,
        ),
        st.builds("{{% set ns.v = {} %}}{}".format, EXPRESSIONS, children),
        st.builds("{{% set ns.w = [ns.w, ns.w] %}}{}".format, children),
        st.builds("{{% set t %}}{}{{% endset %}}{{{{ t }}}}".format, children),
        st.builds("{{% filter upper %}}{}{{% endfilter %}}".format, children),
        st.builds(
            "{{% macro m(n) %}}{}{{{{ m(n) }}}}{{{{ m(n) }}}}{{% endmacro %}}{{{{ m(1) }}}}".format,
            children,
        ),
        st.builds(
            "{{% for x in {} recursive %}}{}{{{{ loop({}) }}}}{{% endfor %}}".format,
            EXPRESSIONS,
            children,
            EXPRESSIONS,
        ),
    )


OUTPUTS = st.builds("{{{{ {} }}}}".format, EXPRESSIONS)
TEMPLATES = st.recursive(OUTPUTS, _statements, max_leaves=5).map(
    "{{% set ns = namespace(v='ab', w=1) %}}{}".format
)
BUDGETS = st.sampled_from([1024, 4096, 65536])


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(template=st.one_of(TEMPLATES, st.sampled_from([t for t, _ in TOO_LARGE] + TOO_LONG)),
       max_bytes=BUDGETS)  # fmt: skip
@example(
    template="{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
    max_bytes=1024,
)
@example(template="{{ ''.center(200000000) }}", max_bytes=1024)
def test_every_render_ends_within_its_budgets(template: str, max_bytes: int) -> None:
    ctx = TemplateContext(
        inputs={"s": "a;b'c", "l": ["x", "y"]},
        limits=Limits(max_bytes=max_bytes, timeout_s=TIMEOUT_S),
    )
    started = time.monotonic()
    try:
        text = render(template, ctx, where="script")
    except TemplateError:
        text = ""
    elapsed = time.monotonic() - started
    assert elapsed < TIMEOUT_S + MARGIN_S, f"{template!r} took {elapsed:.2f}s"
    assert len(text.encode("utf-8", "surrogatepass")) <= max_bytes
