"""Static checks of a flow's templates, for `runner validate` and the loader: every name a
template uses must exist where it runs (an input, a variable, the outputs of a task that
ends before this one, ...), variables must not use each other in a loop, and syntax must
be valid. Also `referenced_outputs`: which tasks' outputs a task reads, which the
scheduler needs to skip a task whose upstream outputs will never exist.

Rendering itself is `runner.templating`; both share its sandboxed Jinja environment.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from jinja2 import TemplateSyntaxError, meta, nodes

from runner.dag import find_cycle
from runner.errors import Loc
from runner.flow import Flow, Task
from runner.messages import did_you_mean
from runner.templating import (
    ENVIRONMENT,
    EXECUTION_FIELDS,
    FLOW_FIELDS,
    TASK_FIELDS,
    TASK_SCOPE,
    VARIABLE_SCOPE,
    VARIABLE_SCOPE_TEXT,
    compile_template,
    excerpt,
    is_template,
)

__all__ = ["find_template_problems", "referenced_outputs"]


def find_template_problems(
    flow: Flow, upstream_of: Callable[[str], AbstractSet[str]]
) -> list[tuple[Loc, str]]:
    """Every template problem a run would meet, each with its loc in the flow file.

    `upstream_of(task_id)` gives every task that finishes before `task_id` starts (all of
    its transitive upstream tasks). `env.X` is never reported: `--env` can add names.
    """
    problems: list[tuple[Loc, str]] = []
    inputs = [spec.id for spec in flow.inputs]
    variables = list(flow.variables)
    task_ids = [task.id for task in flow.tasks]
    uses: dict[str, list[str]] = {}
    for name, value in flow.variables.items():
        checker = _Checker(inputs, variables, task_ids, scope=VARIABLE_SCOPE)
        for loc, source in _strings(value, ("variables", name)):
            problems.extend(checker.check(loc, source))
        uses[name] = checker.variables_used
    cycle = find_cycle(uses)
    if cycle:
        # find_cycle follows edges upstream; a cycle reads best in the order of use.
        cycle = list(reversed(cycle))
        problems.append((("variables", cycle[0]), "variables cycle: " + " -> ".join(cycle)))
    for index, task in enumerate(flow.tasks):
        # Most fields of a big flow hold no template at all: `check` has nothing to say
        # about those, so a task without any is not looked at further.
        templates = [(loc, source) for loc, source in _task_templates(task) if is_template(source)]
        if not templates:
            continue
        checker = _Checker(
            inputs,
            variables,
            task_ids,
            scope=TASK_SCOPE,
            task=task,
            upstream=upstream_of(task.id),
        )
        for loc, source in templates:
            problems.extend(checker.check(("tasks", index, *loc), source))
    # `errors:` and `finally:` run after every task of `tasks:` has ended.
    ended = frozenset(task_ids)
    for key, handlers in (("errors", flow.errors), ("finally", flow.finally_)):
        for index, task in enumerate(handlers):
            checker = _Checker(
                inputs, variables, task_ids, scope=TASK_SCOPE, task=task, upstream=ended
            )
            for loc, source in _task_templates(task):
                problems.extend(checker.check((key, index, *loc), source))
    return problems


def referenced_outputs(task: Task) -> set[str]:
    """The ids of tasks whose outputs `task`'s templates name (`outputs.extract...`).

    Only names written in the template count: `outputs[some_variable]` names none. A
    template with a syntax error names none (validation reports it).
    """
    found: set[str] = set()
    for _, source in _task_templates(task):
        if not is_template(source):
            continue
        try:
            analysis = _analyse(source)
        except TemplateSyntaxError:
            continue
        found.update(ref.key for ref in analysis.references if ref.name == "outputs")
    return found


def _task_templates(task: Task) -> Iterator[tuple[Loc, str]]:
    """(loc within the task, text) of every template field of a task."""
    if isinstance(task.command, str):
        yield ("command",), task.command
    elif task.command is not None:
        for index, word in enumerate(task.command):
            yield ("command", index), word
    if task.script is not None:
        yield ("script",), task.script
    for key, value in task.env.items():
        yield ("env", key), value
    for index, volume in enumerate(task.volumes):
        yield ("volumes", index), volume
    yield ("working_dir",), task.working_dir
    if task.network is not None:
        yield ("network",), task.network
    if task.when is not None:
        yield ("when",), task.when


def _strings(value: Any, loc: Loc) -> Iterator[tuple[Loc, str]]:
    if isinstance(value, str):
        yield loc, value
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            yield from _strings(item, (*loc, index))
    elif isinstance(value, Mapping):
        for key, item in value.items():
            yield from _strings(item, (*loc, str(key)))


@dataclass(frozen=True)
class _Name:
    """A name a template takes from its context (not a local like a loop variable)."""

    name: str
    line: int


@dataclass(frozen=True)
class _Reference:
    """`inputs.color` or `inputs['color']` in a template: a context name and a key."""

    name: str
    key: str
    text: str
    line: int


@dataclass(frozen=True)
class _Analysis:
    names: tuple[_Name, ...]
    """Each context name once, in the order of first use."""
    references: tuple[_Reference, ...]


@lru_cache(maxsize=2048)
def _analyse(source: str) -> _Analysis:
    """What a template takes from its context; raises TemplateSyntaxError, unknown
    filters and tests included (compiling finds those, parsing does not)."""
    compile_template(source)
    tree = ENVIRONMENT.parse(source)
    context_names = meta.find_undeclared_variables(tree)
    names: dict[str, _Name] = {}
    for node in tree.find_all(nodes.Name):
        if node.name in context_names and node.name not in names:
            names[node.name] = _Name(node.name, node.lineno)
    references: list[_Reference] = []
    for access in tree.find_all((nodes.Getattr, nodes.Getitem)):
        assert isinstance(access, nodes.Getattr | nodes.Getitem)  # what find_all was asked for
        target = access.node
        if not isinstance(target, nodes.Name) or target.name not in context_names:
            continue
        if isinstance(access, nodes.Getattr):
            text = f"{{{{ {target.name}.{access.attr} }}}}"
            references.append(_Reference(target.name, access.attr, text, access.lineno))
        elif isinstance(access.arg, nodes.Const) and isinstance(access.arg.value, str):
            key = access.arg.value
            text = f"{{{{ {target.name}[{key!r}] }}}}"
            references.append(_Reference(target.name, key, text, access.lineno))
    return _Analysis(tuple(names.values()), tuple(references))


class _Checker:
    """Checks the templates of one task (or of the variables) against the flow."""

    def __init__(
        self,
        inputs: Sequence[str],
        variables: Sequence[str],
        task_ids: Sequence[str],
        *,
        scope: Sequence[str],
        task: Task | None = None,
        upstream: AbstractSet[str] = frozenset(),
    ) -> None:
        self.inputs = inputs
        self.variables = variables
        self.task_ids = task_ids
        self.scope = scope
        self.task = task
        self.upstream = upstream
        self.variables_used: list[str] = []

    def check(self, loc: Loc, source: str) -> list[tuple[Loc, str]]:
        if not is_template(source):
            return []
        multi_line = "\n" in source.rstrip("\n")
        try:
            analysis = _analyse(source)
        except TemplateSyntaxError as exc:
            return [(loc, f"{excerpt(source, exc.lineno)}: template syntax error: {exc.message}")]
        found: list[tuple[int, str, str]] = []  # (line, expression, what is wrong)
        for used in analysis.names:
            name = used.name
            if name in self.scope or name in ENVIRONMENT.globals:
                continue
            if name in TASK_SCOPE:
                message = f"variables cannot use {name!r}; they can use {VARIABLE_SCOPE_TEXT}"
            else:
                message = (
                    f"unknown name {name!r}{did_you_mean(name, self.scope)}; "
                    f"templates can use {', '.join(self.scope)}"
                )
            found.append((used.line, f"{{{{ {name} }}}}", message))
        for ref in analysis.references:
            if ref.name in self.scope:
                problem = self._check_reference(ref)
                if problem is not None:
                    found.append((ref.line, ref.text, problem))
        found.sort(key=lambda item: item[0])
        messages = (
            f"line {line}: {text}: {message}" if multi_line else f"{text}: {message}"
            for line, text, message in found
        )
        return [(loc, message) for message in dict.fromkeys(messages)]

    def _check_reference(self, ref: _Reference) -> str | None:
        name, key = ref.name, ref.key
        if name == "inputs" and key not in self.inputs:
            return _unknown("input", key, self.inputs, "inputs are", "this flow declares no inputs")
        if name == "variables":
            if key not in self.variables:
                return _unknown(
                    "variable",
                    key,
                    self.variables,
                    "variables are",
                    "this flow declares no variables",
                )
            self.variables_used.append(key)
        fields = {"execution": EXECUTION_FIELDS, "flow": FLOW_FIELDS, "task": TASK_FIELDS}
        if name in fields and key not in fields[name]:
            known = fields[name]
            return (
                f"{name} has no field {key!r}{did_you_mean(key, known)}; it has: {', '.join(known)}"
            )
        if name == "matrix" and self.task is not None:
            keys = list(self.task.matrix or {})
            if key not in keys:
                return _unknown(
                    "matrix key",
                    key,
                    keys,
                    "matrix keys are",
                    f"task {self.task.id!r} has no matrix",
                )
        if name == "outputs" and self.task is not None:
            if key not in self.task_ids:
                return f"unknown task {key!r}{did_you_mean(key, self.task_ids)}"
            if key == self.task.id:
                return f"task {key!r} uses its own outputs; a task can only use outputs of tasks that run before it"
            if key not in self.upstream:
                return (
                    f"task {self.task.id!r} uses outputs of {key!r}, which does not run "
                    "before it; add it to depends_on"
                )
        return None


def _unknown(noun: str, key: str, known: Sequence[str], listing: str, none: str) -> str:
    """`unknown input 'colour' (did you mean 'color'?); inputs are: color, rows`."""
    if not known:
        return f"unknown {noun} {key!r}; {none}"
    return f"unknown {noun} {key!r}{did_you_mean(key, known)}; {listing}: {', '.join(known)}"
