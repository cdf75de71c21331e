"""Render the templates in a flow (`{{ inputs.color }}`) with Jinja2, sandboxed and strict.

Which strings are templates: a task's `command`, `script`, `env` values, `volumes`,
`working_dir` and `when`, and the flow's `variables`. They are rendered just before a task
starts, so they can use the outputs of tasks that finished before it.

What a template can use:

    inputs.NAME        the execution's input values
    variables.NAME     the flow's `variables:`, rendered on first use (they may use inputs,
                       variables, execution, flow and env; never outputs, task or matrix)
    outputs.TASK.NAME  what a finished task printed as `::{"outputs": {...}}::`; for a
                       matrix task, `outputs.TASK['year=2019,month=1'].NAME`
    execution.id, execution.started_at
    flow.id, flow.namespace, flow.revision
    task.id, task.attempt, task.name (the run name, like `process[year=2019]`)
    env.NAME           the runner's environment: only names in `allowed_env` or given
                       with `--env`
    matrix.KEY         this run's values, for a task with `matrix:`

Rules that differ from plain Jinja, each for a reason:

- The environment is sandboxed (`ImmutableSandboxedEnvironment`): a flow file is code
  from someone else, and `{{ ''.__class__ }}` must not reach Python's internals.
- Every render has a budget (`runner.template_limits`): what one field renders, and every
  string or list built on the way, at most `RUNNER_TEMPLATE_MAX_BYTES` (1 MiB); all the
  templates of one task attempt at most `RUNNER_TEMPLATE_TIMEOUT` (2 s); and a render
  ends as soon as `should_stop` (kill, flow timeout, Ctrl-C) gives a reason. Over budget
  is a TemplateTooLarge / TemplateTimedOut / TemplateInterrupted naming the field.
- Undefined names fail (`StrictUndefined`): an empty string in `rm -rf /data/{{ x }}` is
  worse than an error. The error names the field, the expression and what is defined.
- `{{ value }}` prints `true`/`false` for booleans, nothing for null and JSON for lists and
  mappings: what a shell script or a program reading JSON expects, not Python's repr.
- Filters beyond Jinja's own: `shell_quote` (or `shquote`) quotes a value for a POSIX
  shell (`rm {{ inputs.file | shell_quote }}`; a list becomes its items quoted, space
  separated), and `tojson` writes plain JSON (Jinja's escapes `<`, `>`, `&` and `'` for
  HTML). Jinja's `urlize` and `lipsum` are left out (see `runner.template_limits`).

Pure: no I/O. `TemplateError` is defined here (not in `runner.errors`); it is a
`RunnerError` with exit code 2.
"""

from __future__ import annotations

import json
import re
import shlex
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime
from functools import cached_property, lru_cache
from types import TracebackType
from typing import Any

from jinja2 import StrictUndefined, Template, TemplateSyntaxError, UndefinedError
from jinja2.environment import TemplateExpression
from jinja2.exceptions import SecurityError
from jinja2.runtime import Undefined
from jinja2.utils import missing

from runner import settings
from runner.errors import RunnerError
from runner.flow import Flow
from runner.messages import did_you_mean
from runner.secrets import template_secret
from runner.template_limits import (
    LimitedSandbox,
    Limits,
    OverBudget,
    current,
    field_budget,
    run_budget,
)

__all__ = [
    "EXECUTION_FIELDS",
    "FLOW_FIELDS",
    "MAX_TEMPLATE_CODE",
    "TASK_FIELDS",
    "Limits",
    "TemplateCodeTooLarge",
    "TemplateContext",
    "TemplateError",
    "TemplateInterrupted",
    "TemplateTimedOut",
    "TemplateTooLarge",
    "compile_template",
    "excerpt",
    "is_template",
    "is_true",
    "render",
    "render_value",
    "shared_budget",
]


class TemplateError(RunnerError):
    """A template that cannot be rendered: a syntax error, an undefined name, a refused
    operation. The message names the field, the expression and what is defined.

    TemplateError
    ├── TemplateTooLarge     over RUNNER_TEMPLATE_MAX_BYTES: `script: template too large: ...`
    ├── TemplateTimedOut     over RUNNER_TEMPLATE_TIMEOUT: `script: template took longer than 2s ...`
    └── TemplateInterrupted  `should_stop` gave a reason (kill, flow timeout, Ctrl-C)
    """

    exit_code = 2

    def within(self, where: str) -> TemplateError:
        """The same error, its message prefixed with the field that used the failing one."""
        return type(self)(f"{where}: {self}")


class TemplateTooLarge(TemplateError):
    """A render that would produce, or build on the way, more than its size budget."""


class TemplateTimedOut(TemplateError):
    """A render that took longer than its time budget."""


class TemplateInterrupted(TemplateError):
    """A render stopped because `should_stop` gave a reason; `reason` is that reason (the
    task run ends as a container stopped for it would: KILLED, with this reason)."""

    def __init__(self, message: str, reason: str = "") -> None:
        super().__init__(message)
        self.reason = reason or message

    def within(self, where: str) -> TemplateInterrupted:
        return TemplateInterrupted(f"{where}: {self}", self.reason)


# What each name a template can use holds; the static checks know them from here.
# `state` and `failed_tasks` matter in `errors:` and `finally:` tasks; before those run
# they are RUNNING and [].
EXECUTION_FIELDS = ("id", "started_at", "state", "failed_tasks")
FLOW_FIELDS = ("id", "namespace", "revision")
TASK_FIELDS = ("id", "attempt", "name")

TASK_SCOPE = ("inputs", "variables", "outputs", "execution", "flow", "task", "env", "matrix")
VARIABLE_SCOPE = ("inputs", "variables", "execution", "flow", "env")
_NOT_IN_VARIABLES = tuple(name for name in TASK_SCOPE if name not in VARIABLE_SCOPE)
VARIABLE_SCOPE_TEXT = "inputs, variables, execution, flow and env"

_MARKER = re.compile(r"\{[{%#]")
_FALSE_WORDS = frozenset({"", "false", "0", "no", "off", "none"})
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


# --- the Jinja environment ----------------------------------------------------------------


class _UndefinedReference(UndefinedError):
    """An undefined name at a known place (`inputs.colour`): the message starts with it."""


class _Undefined(StrictUndefined):
    """StrictUndefined whose message says what is defined where the name was looked up."""

    __slots__ = ()

    def __init__(
        self,
        hint: str | None = None,
        obj: Any = missing,
        name: str | None = None,
        exc: type[Exception] = UndefinedError,
    ) -> None:
        if hint is None and (obj is missing or isinstance(obj, _Namespace)):
            exc = _UndefinedReference
        super().__init__(hint, obj, name, exc)  # type: ignore[arg-type]  # jinja: type[TemplateRuntimeError]

    @property
    def _undefined_message(self) -> str:
        hint, obj, name = self._undefined_hint, self._undefined_obj, self._undefined_name
        if hint:
            return hint
        if obj is missing:
            return (
                f"{{{{ {name} }}}}: undefined {name!r}{did_you_mean(str(name), TASK_SCOPE)}; "
                f"templates can use {', '.join(TASK_SCOPE)}"
            )
        if isinstance(obj, _Namespace):
            return obj.explain_missing(name)
        if isinstance(obj, Mapping):
            keys = ", ".join(str(key) for key in obj) or "none"
            return f"no key {name!r} in this mapping (it has: {keys})"
        what = "attribute" if isinstance(name, str) else "item"
        return f"a value of type {type(obj).__name__} has no {what} {name!r}"


class _Sandbox(LimitedSandbox):
    """The sandbox with its budgets, and names looked up before methods in runner's
    namespaces (an input called `items` is `inputs.items`)."""

    def getattr(self, obj: Any, attribute: str) -> Any:
        if isinstance(obj, _Namespace):
            if attribute in obj:
                return obj[attribute]
            if attribute in ("keys", "values", "items", "get"):
                return super().getattr(obj, attribute)
            return self.undefined(obj=obj, name=attribute)
        return super().getattr(obj, attribute)

    def getitem(self, obj: Any, argument: Any) -> Any:
        if isinstance(obj, _Namespace):
            if isinstance(argument, str) and argument in obj:
                return obj[argument]
            return self.undefined(obj=obj, name=argument)
        return super().getitem(obj, argument)


def _text(value: Any) -> Any:
    """How `{{ value }}` prints: true/false, nothing for null, JSON for lists and mappings."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return ""
    if isinstance(value, Mapping | list | tuple):
        return _dumps(value)
    return value


def _printed(value: Any) -> Any:
    """`_text`, once the text of a list, a mapping or another object is known to fit."""
    if not isinstance(value, str):
        current().check_text(value, "printing")
    return _text(value)


def _plain(value: Any) -> Any:
    """json.dumps' fallback: runner's namespaces are mappings, not dicts."""
    if isinstance(value, Undefined):
        value._fail_with_undefined_error()
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, set | frozenset):
        return sorted(value, key=str)
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"a value of type {type(value).__name__} cannot be written as JSON")


def _dumps(value: Any, indent: int | None = None) -> str:
    return json.dumps(value, ensure_ascii=False, indent=indent, default=_plain)


def _tojson(value: Any, indent: int | None = None) -> str:
    if isinstance(value, Undefined):
        value._fail_with_undefined_error()
    return _dumps(value, indent)


def _shquote(value: Any) -> str:
    """`value` as one shell word; a list as its items, each one word, space separated."""
    if isinstance(value, Undefined):
        value._fail_with_undefined_error()
    if isinstance(value, list | tuple):
        return " ".join(_shquote(item) for item in value)
    return shlex.quote(str(_text(value)))


ENVIRONMENT = _Sandbox(
    undefined=_Undefined,
    autoescape=False,
    keep_trailing_newline=True,  # scripts end with a newline; keep it
    finalize=_printed,
)
ENVIRONMENT.filters["shell_quote"] = _shquote
ENVIRONMENT.filters["shquote"] = _shquote  # the first name it had
ENVIRONMENT.filters["tojson"] = _tojson
# `{{ secret('NAME') }}`, masked wherever the value shows (runner.secrets)
ENVIRONMENT.globals["secret"] = template_secret


MAX_TEMPLATE_CODE = 32 * 1024
"""The most characters of template code (inside `{{ }}`, `{% %}` and `{# #}`) one field
may hold. Compiling is not interrupted by the budgets, and takes a second or more for
every 100,000 characters of code: a flow could make validation and every run wait."""


class TemplateCodeTooLarge(TemplateSyntaxError):
    """More template code than `MAX_TEMPLATE_CODE` in one field: refused before compiling."""


def template_code_size(source: str) -> int:
    """How many characters of `source` are template code, tags and comments included (an
    unclosed tag counts to the end); linear, however the tags nest or are left open."""
    size = 0
    pos = source.find("{")
    while pos != -1 and pos + 1 < len(source):
        opener = source[pos + 1]
        if opener in "{%#":
            closer = {"{": "}}", "%": "%}", "#": "#}"}[opener]
            end = source.find(closer, pos + 2)
            end = len(source) if end == -1 else end + 2
            size += end - pos
            pos = source.find("{", end)
        else:
            pos = source.find("{", pos + 1)
    return size


def compile_template(source: str) -> Template:
    """The compiled template (raises TemplateSyntaxError, TemplateCodeTooLarge); most
    tasks reuse a few strings, so compiled templates are kept."""
    code = template_code_size(source)
    if code > MAX_TEMPLATE_CODE:
        raise TemplateCodeTooLarge(
            f"{code:,} characters of template code ({{{{ }}}}, {{% %}}); "
            f"at most {MAX_TEMPLATE_CODE:,} in one field",
            lineno=1,
        )
    return _compile(source)


@lru_cache(maxsize=2048)
def _compile(source: str) -> Template:
    try:
        return ENVIRONMENT.from_string(source)
    except TemplateSyntaxError:
        raise
    except Exception as exc:
        # Jinja computes constant parts while compiling, and lets some errors through:
        # `{{ {{'k': 'v'}: 1} }}` raises TypeError (a dict cannot be a key).
        raise TemplateSyntaxError(f"{type(exc).__name__}: {exc}", lineno=1) from exc


@lru_cache(maxsize=512)
def _single_expression(source: str) -> TemplateExpression | None:
    """The compiled expression if `source` is exactly one `{{ expr }}`, else None."""
    stripped = source.strip()
    if not (stripped.startswith("{{") and stripped.endswith("}}")):
        return None
    if template_code_size(stripped) > MAX_TEMPLATE_CODE:
        return None  # rendered instead, which refuses it
    try:
        # `{{ a }} and {{ b }}` leaves `}}` inside: a syntax error here, so not native.
        return ENVIRONMENT.compile_expression(stripped[2:-2], undefined_to_none=False)
    except TemplateSyntaxError:
        return None


# --- what templates see -------------------------------------------------------------------


class _Namespace(Mapping[str, Any]):
    """A mapping templates read by name (`inputs`, `outputs.extract`) that can say, for a
    name it lacks, what it does hold."""

    __slots__ = ("_data", "_explain", "_path", "_wrap")

    def __init__(
        self,
        data: Mapping[str, Any],
        path: str,
        explain: Callable[[str, Sequence[str]], str],
        wrap: Callable[[str, Any], Any] | None = None,
    ) -> None:
        self._data = data
        self._path = path
        self._explain = explain
        self._wrap = wrap

    def __getitem__(self, key: str) -> Any:
        value = self._data[key]
        return self._wrap(key, value) if self._wrap is not None else value

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:
        return repr(dict(self))

    def explain_missing(self, name: Any) -> str:
        return f"{_reference(self._path, name)}: {self._explain(str(name), list(self._data))}"


class _Variables(_Namespace):
    """`variables`: each one rendered on first use, at most once per execution."""

    __slots__ = ("_scope",)

    def __init__(self, scope: _ExecutionScope) -> None:
        super().__init__(scope.raw_variables, "variables", _explain_names("variables"))
        self._scope = scope

    def __getitem__(self, key: str) -> Any:
        if key not in self._data:
            raise KeyError(key)
        return self._scope.variable(key)


def _reference(path: str, name: Any) -> str:
    if isinstance(name, str) and _IDENTIFIER.match(name):
        return f"{{{{ {path}.{name} }}}}"
    return f"{{{{ {path}[{name!r}] }}}}"


def _names_of(names: Iterable[str]) -> str:
    return ", ".join(names)


def _explain_names(noun: str, empty: str | None = None) -> Callable[[str, Sequence[str]], str]:
    """`undefined 'colour' (did you mean 'color'?); inputs are: color, rows`."""

    def explain(name: str, defined: Sequence[str]) -> str:
        if not defined:
            return f"undefined {name!r}; {empty or f'there are no {noun}'}"
        return f"undefined {name!r}{did_you_mean(name, defined)}; {noun} are: {_names_of(defined)}"

    return explain


def _explain_fields(noun: str) -> Callable[[str, Sequence[str]], str]:
    def explain(name: str, defined: Sequence[str]) -> str:
        listing = _names_of(defined) or "nothing"
        return f"undefined {name!r}{did_you_mean(name, defined)}; {noun} has: {listing}"

    return explain


def _explain_env(allowed: frozenset[str]) -> Callable[[str, Sequence[str]], str]:
    def explain(name: str, defined: Sequence[str]) -> str:
        if name in allowed:
            return f"{name!r} is allowed but not set in the runner's environment"
        listing = _names_of(defined) if defined else "nothing"
        return (
            f"undefined {name!r}{did_you_mean(name, defined)}; env has: {listing} "
            "(a name must be listed in allowed_env or given with --env)"
        )

    return explain


def _explain_outputs(task_ids: Sequence[str]) -> Callable[[str, Sequence[str]], str]:
    def explain(name: str, defined: Sequence[str]) -> str:
        listing = (
            f"outputs are from: {_names_of(defined)}" if defined else "no task has outputs yet"
        )
        if name in task_ids:
            return f"task {name!r} has no outputs: it has not run before this task; {listing}"
        if task_ids:
            return f"no task {name!r}{did_you_mean(name, task_ids)}; {listing}"
        return f"no outputs of {name!r}{did_you_mean(name, defined)}; {listing}"

    return explain


def _explain_task_outputs(run: str) -> Callable[[str, Sequence[str]], str]:
    def explain(name: str, defined: Sequence[str]) -> str:
        return f"{run!r} has no output {name!r} (it has: {_names_of(defined) or 'none'})"

    return explain


def _explain_runs(task_id: str) -> Callable[[str, Sequence[str]], str]:
    def explain(name: str, defined: Sequence[str]) -> str:
        return f"{task_id!r} has no run {name!r} (it has: {_names_of(defined) or 'none'})"

    return explain


def _run_name(task_id: str, combination: Mapping[str, Any]) -> str:
    """`process[year=2019,month=1]`, as `dag` names a matrix run."""
    if not combination:
        return task_id
    label = ",".join(f"{key}={_label_value(value)}" for key, value in combination.items())
    return f"{task_id}[{label}]"


def _label_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


@dataclass(frozen=True)
class TemplateContext:
    """Everything a template can use while one task attempt starts.

    Make one per execution with `for_execution`, then one per task attempt with
    `for_task`; task contexts made from the same execution context share its rendered
    `variables` (they cannot depend on the task, so each is rendered once per execution).
    Plain construction works too (tests): missing parts are empty.
    """

    inputs: Mapping[str, Any] = field(default_factory=dict)
    variables: Mapping[str, Any] = field(default_factory=dict)
    """The flow's `variables:` as written: templates, rendered lazily."""
    outputs: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    """Task id -> its outputs; for a matrix task, combination label -> outputs."""
    execution: Mapping[str, Any] = field(default_factory=dict)
    flow: Mapping[str, Any] = field(default_factory=dict)
    task: Mapping[str, Any] = field(default_factory=dict)
    env: Mapping[str, str] = field(default_factory=dict)
    """Only the names a template may see (allowed_env or --env)."""
    matrix: Mapping[str, Any] = field(default_factory=dict)
    """This run's matrix combination; empty for a task without `matrix:`."""
    allowed_env: frozenset[str] = frozenset()
    """Names a template may read from env even if unset (for the error message)."""
    task_ids: tuple[str, ...] = ()
    """Every task of the flow (for error messages)."""
    matrix_tasks: frozenset[str] = frozenset()
    """Tasks whose outputs are keyed by combination label."""
    should_stop: Callable[[], str | None] | None = field(default=None, compare=False)
    """Asked while a template renders: a reason (`killed by the user`, `stopped: execution
    timed out after 2s`) ends the render with TemplateInterrupted; None lets it go on."""
    limits: Limits | None = None
    """The size and time budgets; None reads RUNNER_TEMPLATE_MAX_BYTES and
    RUNNER_TEMPLATE_TIMEOUT when a render starts."""
    _scope: _ExecutionScope | None = field(default=None, repr=False, compare=False, kw_only=True)

    def __post_init__(self) -> None:
        if self._scope is None or not self._scope.belongs_to(self):
            object.__setattr__(self, "_scope", _ExecutionScope(self))

    @classmethod
    def for_execution(
        cls,
        flow: Flow,
        *,
        execution_id: str,
        inputs: Mapping[str, Any],
        env: Mapping[str, str] | None = None,
        revision: str = "",
        started_at: datetime | None = None,
        should_stop: Callable[[], str | None] | None = None,
        limits: Limits | None = None,
    ) -> TemplateContext:
        """The context shared by every task of one execution. `env` holds only the names
        templates may see (the caller filters by `allowed_env` and `--env`); `should_stop`
        is asked while templates render (see the field)."""
        visible = dict(env or {})
        return cls(
            inputs=inputs,
            variables=flow.variables,
            execution={
                "id": execution_id,
                "started_at": started_at.isoformat() if started_at is not None else None,
                "state": "RUNNING",
                "failed_tasks": [],
            },
            flow={"id": flow.id, "namespace": flow.namespace, "revision": revision},
            env=visible,
            allowed_env=frozenset(flow.allowed_env) | frozenset(visible),
            task_ids=tuple(task.id for task in flow.tasks),
            matrix_tasks=frozenset(task.id for task in flow.tasks if task.matrix),
            should_stop=should_stop,
            limits=limits,
        )

    def budget_limits(self) -> Limits:
        """`limits`, or the settings' (raises SettingError for a bad value)."""
        return self.limits if self.limits is not None else Limits.from_settings()

    def for_task(
        self,
        task_id: str,
        *,
        attempt: int = 1,
        name: str | None = None,
        matrix: Mapping[str, Any] | None = None,
        outputs: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> TemplateContext:
        """The context of one attempt of `task_id` (of one matrix combination). `name` is
        the run name (`process[year=2019]`); by default made from `task_id` and `matrix`."""
        name = name if name is not None else _run_name(task_id, matrix or {})
        return replace(
            self,
            task={"id": task_id, "attempt": attempt, "name": name},
            matrix=dict(matrix or {}),
            outputs=outputs if outputs is not None else self.outputs,
        )

    def variable(self, name: str) -> Any:
        """The rendered value of variable `name`; raises TemplateError (and KeyError for a
        name the flow does not declare)."""
        return self._execution_scope.variable(name)

    @property
    def _execution_scope(self) -> _ExecutionScope:
        assert self._scope is not None  # set in __post_init__
        return self._scope

    @cached_property
    def _names(self) -> dict[str, Any]:
        """The top-level names of a task's templates; built on first render only."""
        matrix_tasks, task_ids = self.matrix_tasks, self.task_ids

        def wrap_task(task_id: str, value: Any) -> Any:
            if not isinstance(value, Mapping):
                return value
            if task_id in matrix_tasks:

                def wrap_run(label: str, outputs: Any) -> Any:
                    if not isinstance(outputs, Mapping):
                        return outputs
                    path = f"outputs.{task_id}[{label!r}]"
                    return _Namespace(outputs, path, _explain_task_outputs(f"{task_id}[{label}]"))

                return _Namespace(value, f"outputs.{task_id}", _explain_runs(task_id), wrap_run)
            return _Namespace(value, f"outputs.{task_id}", _explain_task_outputs(task_id))

        return {
            **self._execution_scope.names,
            "outputs": _Namespace(self.outputs, "outputs", _explain_outputs(task_ids), wrap_task),
            "task": _Namespace(self.task, "task", _explain_fields("task")),
            "matrix": _Namespace(
                self.matrix,
                "matrix",
                _explain_names("matrix keys", "this task has no matrix"),
            ),
        }


class _ExecutionScope:
    """What every task of an execution sees alike, and the cache of rendered variables.

    A lock guards the cache: tasks of one execution render in several threads. It is
    re-entrant because rendering a variable may render the variables it uses.
    """

    def __init__(self, ctx: TemplateContext) -> None:
        self._parts = self._parts_of(ctx)
        self.raw_variables = ctx.variables
        self._values: dict[str, Any] = {}
        self._errors: dict[str, TemplateError] = {}
        self._stack: list[str] = []
        self._lock = threading.RLock()
        self.names: dict[str, Any] = {
            "inputs": _Namespace(
                ctx.inputs, "inputs", _explain_names("inputs", "this flow declares no inputs")
            ),
            "variables": _Variables(self),
            "execution": _Namespace(ctx.execution, "execution", _explain_fields("execution")),
            "flow": _Namespace(ctx.flow, "flow", _explain_fields("flow")),
            "env": _Namespace(ctx.env, "env", _explain_env(ctx.allowed_env)),
        }
        refused = f"variables cannot use '{{name}}'; they can use {VARIABLE_SCOPE_TEXT}"
        self._variable_names = {
            **self.names,
            **{
                name: _Undefined(hint=refused.format(name=name), name=name)
                for name in _NOT_IN_VARIABLES
            },
        }

    @staticmethod
    def _parts_of(ctx: TemplateContext) -> tuple[object, ...]:
        return (ctx.inputs, ctx.variables, ctx.execution, ctx.flow, ctx.env, ctx.allowed_env)

    def belongs_to(self, ctx: TemplateContext) -> bool:
        """Whether `ctx` holds the very values this scope was made from (as `replace`
        keeps them): then its tasks can share the rendered variables."""
        return all(a is b for a, b in zip(self._parts, self._parts_of(ctx), strict=True))

    def variable(self, name: str) -> Any:
        with self._lock:
            if name in self._values:
                return self._values[name]
            if name in self._errors:
                error = self._errors[name]
                raise type(error)(str(error))
            raw = self.raw_variables[name]  # KeyError for an undeclared one
            if name in self._stack:
                cycle = [*self._stack[self._stack.index(name) :], name]
                raise TemplateError("variables cycle: " + " -> ".join(cycle))
            self._stack.append(name)
            try:
                value = _render_value(raw, self._variable_names, f"variables.{name}", nested=True)
            except TemplateError as exc:
                # A variable fails the same way for every task, but running out of time
                # (maybe the using template's) or being stopped says nothing about it.
                if not isinstance(exc, TemplateTimedOut | TemplateInterrupted):
                    self._errors[name] = exc
                raise
            finally:
                self._stack.pop()
            self._values[name] = value
            return value


# --- rendering ------------------------------------------------------------------------------


def render(template: str, ctx: TemplateContext, *, where: str) -> str:
    """`template` rendered with `ctx`; `where` names the field for messages (`env.FILE`).

    A string without `{{`, `{%` or `{#` is returned as is, without touching Jinja.
    Raises TemplateError (TemplateTooLarge, TemplateTimedOut, TemplateInterrupted over
    the budget: see `shared_budget`).
    """
    if "{" not in template or _MARKER.search(template) is None:
        return template
    with run_budget(ctx.budget_limits, ctx.should_stop):
        return _render(template, ctx._names, where, nested=False)


def render_value(value: Any, ctx: TemplateContext, *, where: str) -> Any:
    """`value` with every string inside it rendered: lists, tuples and dict values (not
    keys) are walked; other values are returned as they are. `where` grows per item:
    `env.FILE`, `command[1]`. Each string is a field with its own size budget."""
    with run_budget(ctx.budget_limits, ctx.should_stop):
        return _render_value(value, ctx._names, where, nested=False)


@contextmanager
def shared_budget(ctx: TemplateContext) -> Iterator[None]:
    """Every render inside shares one time budget (`RUNNER_TEMPLATE_TIMEOUT`, from now),
    one count of what templates build, and `ctx.should_stop`: a task's fields together
    get 2 seconds, not 2 seconds each. Size stays a budget per field. Outside it, each
    call of `render`, `render_value` or `is_true` has a budget of its own."""
    with run_budget(ctx.budget_limits, ctx.should_stop):
        yield


def is_true(template: str, ctx: TemplateContext, *, where: str = "when") -> bool:
    """Whether a `when:` condition holds.

    Exactly one `{{ expr }}`: the expression is evaluated to a Python value, and a
    non-string value counts by Python's truthiness (0, empty lists and null are false).
    Anything else is rendered to text. Text (from either path) is false when, stripped and
    lowercased, it is one of "", "false", "0", "no", "off", "none": so `{{ inputs.flag }}`
    is false for the bool false and for the string "false" alike.
    """
    if "{" in template:
        expression = _single_expression(template)
        if expression is not None:
            with run_budget(ctx.budget_limits, ctx.should_stop):
                try:
                    with field_budget():
                        value = expression(ctx._names)
                        if isinstance(value, Undefined):
                            value._fail_with_undefined_error()
                        if not isinstance(value, str):
                            return bool(value)
                except Exception as exc:
                    raise _as_template_error(
                        exc, template, where, nested=False, compiled=expression._template
                    ) from exc
            return value.strip().lower() not in _FALSE_WORDS
    return render(template, ctx, where=where).strip().lower() not in _FALSE_WORDS


def _render_value(value: Any, names: Mapping[str, Any], where: str, *, nested: bool) -> Any:
    if isinstance(value, str):
        if "{" not in value or _MARKER.search(value) is None:
            return value
        return _render(value, names, where, nested=nested)
    if isinstance(value, list | tuple):
        items = [
            _render_value(item, names, f"{where}[{index}]", nested=nested)
            for index, item in enumerate(value)
        ]
        return items if isinstance(value, list) else tuple(items)
    if isinstance(value, Mapping):
        return {
            key: _render_value(item, names, _field(where, key), nested=nested)
            for key, item in value.items()
        }
    return value


def _field(where: str, key: Any) -> str:
    if isinstance(key, str) and _IDENTIFIER.match(key):
        return f"{where}.{key}"
    return f"{where}[{key!r}]"


def _render(template: str, names: Mapping[str, Any], where: str, *, nested: bool) -> str:
    try:
        compiled = compile_template(template)
    except TemplateCodeTooLarge as exc:
        raise TemplateTooLarge(f"{where}: template too large: {exc.message}") from exc
    except TemplateSyntaxError as exc:
        raise TemplateError(
            f"{where}: {excerpt(template, exc.lineno)}: template syntax error: {exc.message}"
        ) from exc
    try:
        with field_budget() as budget:
            return _stream(compiled, names, budget.max_bytes)
    except Exception as exc:
        raise _as_template_error(exc, template, where, nested=nested, compiled=compiled) from exc


def _stream(compiled: Template, names: Mapping[str, Any], max_bytes: int) -> str:
    """What `compiled.render(names)` returns, its size counted as it grows."""
    parts: list[str] = []
    size = 0
    for part in compiled.root_render_func(compiled.new_context(dict(names))):
        size += len(part)
        if size > max_bytes:
            current().output_too_large()
        parts.append(part)
    text = "".join(parts)
    # Counted in characters so far; a character takes up to 4 bytes of UTF-8.
    if 4 * len(text) > max_bytes and len(text.encode("utf-8", "surrogatepass")) > max_bytes:
        current().output_too_large()
    return text


def _as_template_error(
    exc: Exception, template: str, where: str, *, nested: bool, compiled: Template | None = None
) -> TemplateError:
    """One message for anything rendering raised: `where: expression: what went wrong`."""
    if isinstance(exc, TemplateError):
        # From a variable this template uses: that message names the variable already.
        return exc if nested else exc.within(where)
    line = _line_of(exc.__traceback__, compiled)
    multi_line = "\n" in template.rstrip("\n")
    if isinstance(exc, OverBudget):
        return _over_budget(exc, template, where, line)
    if isinstance(exc, _UndefinedReference):
        prefix = f"line {line}: " if multi_line and line is not None else ""
        return TemplateError(f"{where}: {prefix}{exc}")
    if isinstance(exc, SecurityError | UndefinedError):
        reason = str(exc).rstrip(".")
    elif isinstance(exc, RecursionError):
        reason = "it calls itself too deeply (RecursionError)"
    else:
        reason = f"{type(exc).__name__}: {exc}"
    return TemplateError(f"{where}: {excerpt(template, line)}: {reason}")


def _over_budget(exc: OverBudget, template: str, where: str, line: int | None) -> TemplateError:
    if exc.kind == "stop":
        return TemplateInterrupted(f"{where}: rendering stopped: {exc.detail}", exc.detail)
    if exc.kind == "time":
        return TemplateTimedOut(
            f"{where}: template {exc.detail} ({settings.TEMPLATE_TIMEOUT_ENV}); "
            f"it was at {excerpt(template, line)}"
        )
    if exc.kind == "output":
        return TemplateTooLarge(f"{where}: template too large: {exc.detail}")
    return TemplateTooLarge(f"{where}: template too large: {excerpt(template, line)}: {exc.detail}")


def _line_of(tb: TracebackType | None, compiled: Template | None) -> int | None:
    """The template line being run when an error was raised: the line of the deepest
    frame of the template's code, mapped back to the template's text. (Not Jinja's own
    rewriting of tracebacks: it compiles a code object per frame, which takes seconds for
    the thousand frames of a RecursionError.)"""
    line = None
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == "<template>":
            line = tb.tb_lineno
        tb = tb.tb_next
    if line is not None and compiled is not None:
        return compiled.get_corresponding_lineno(line)
    return line


def excerpt(template: str, line: int | None) -> str:
    """The failing part of a template for a message: all of a one-line template, else
    `line N: text of that line`; shortened to 80 characters."""
    lines = template.rstrip("\n").split("\n")
    if len(lines) == 1:
        text = lines[0].strip()
    elif line is not None and 1 <= line <= len(lines):
        text = f"line {line}: {lines[line - 1].strip()}"
    else:
        text = f"{lines[0].strip()} ..."
    return text if len(text) <= 80 else text[:77] + "..."


def is_template(source: str) -> bool:
    """Whether Jinja would find anything to do in `source` (`{{`, `{%` or `{#`)."""
    return "{" in source and _MARKER.search(source) is not None
