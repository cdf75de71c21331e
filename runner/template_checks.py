"""Static checks of a flow's templates, for `runner validate` and the loader: every name a
template uses must exist where it runs (an input, a variable, the outputs of a task that
ends before this one, ...), variables must not use each other in a loop, and syntax must
be valid. Also `referenced_outputs`: which tasks' outputs a task reads, which the
scheduler needs to skip a task whose upstream outputs will never exist.

Also `find_shell_warnings`: where a value given with `-i` reaches shell code unquoted
(warnings, not errors: `runner validate` prints them).

Rendering itself is `runner.templating`; both share its sandboxed Jinja environment.
"""

from __future__ import annotations

import posixpath
import re
import shlex
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
    TRIGGER_FIELDS,
    VARIABLE_SCOPE,
    VARIABLE_SCOPE_TEXT,
    TemplateCodeTooLarge,
    compile_template,
    excerpt,
    is_template,
)

__all__ = [
    "find_shell_warnings",
    "find_template_problems",
    "reads_outputs",
    "referenced_outputs",
]


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


def reads_outputs(task: Task) -> bool:
    """Whether any template of `task` names `outputs` at all (`outputs.x`, `outputs[k]`,
    the whole mapping). A task that does not cannot see other tasks' outputs, so the
    scheduler need not copy them for it. A template with a syntax error counts as one
    that does (it fails when rendered anyway)."""
    for _, source in _task_templates(task):
        if not is_template(source):
            continue
        try:
            analysis = _analyse(source)
        except TemplateSyntaxError:
            return True
        if any(used.name == "outputs" for used in analysis.names):
            return True
    return False


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
        except TemplateCodeTooLarge as exc:
            return [(loc, f"template too large: {exc.message}")]
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
        fields = {
            "execution": EXECUTION_FIELDS,
            "flow": FLOW_FIELDS,
            "task": TASK_FIELDS,
            "trigger": TRIGGER_FIELDS,
        }
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


# --- warnings: values given with -i that reach a shell unquoted ------------------------------

SHELLS = frozenset({"sh", "bash", "dash", "zsh", "ash", "ksh", "mksh"})
"""Interpreters that parse their text as shell code: `script:` run by one of them, and a
`command: [sh, -c, TEXT]`, are shell code, as a `command:` string is (`/bin/sh -c`)."""

QUOTING_FILTERS = frozenset(
    {"shell_quote", "shquote", "int", "float", "abs", "round", "length", "count", "wordcount",
     "filesizeformat", "urlencode"}
)  # fmt: skip
"""Filters whose result is safe in a shell whatever their input: quoted, or a number, or
percent-encoded. Not `tojson`: a JSON string is in double quotes, where the shell still
runs `$(...)`."""

_PLAIN_WORD = re.compile(r"^[A-Za-z0-9_.,:/=+@%-]*$")

Taint = dict[str, str]
"""Input id -> the reference that carries it into the text (`inputs.name`, `variables.file`)."""


def find_shell_warnings(flow: Flow) -> list[tuple[Loc, str]]:
    """Where a value given with `-i` reaches shell code unquoted: `-i name='x; rm -rf ~'`
    makes `command: echo {{ inputs.name }}` run `rm -rf ~`. A warning, not an error: the
    flow may mean it (a trusted operator passing shell code on purpose).

    Inputs that hold free text are followed: `string` (or no type), `json`, `file` (its
    name), `secret`, arrays of those, and `enum`s with a value that is not a plain word.
    They are followed through `{% set %}`, loops and `variables:` into the text of
    `command:` strings, `script:` run by a shell and the text of `[sh, -c, TEXT]`; a value
    passed through `shell_quote` (or another filter of `QUOTING_FILTERS`) is safe.
    """
    free = frozenset(spec.id for spec in flow.inputs if _free_text(spec))
    if not free:
        return []
    variables = _variable_taints(flow, free)
    warnings: list[tuple[Loc, str]] = []
    for key, tasks in (("tasks", flow.tasks), ("errors", flow.errors), ("finally", flow.finally_)):
        for index, task in enumerate(tasks):
            for loc, source in _shell_code(task):
                for message in _unquoted(source, free, variables):
                    warnings.append(((key, index, *loc), message))
    return warnings


def _free_text(spec: Any) -> bool:
    kind = spec.type.value
    if kind == "array":
        kind = spec.item_type.value if spec.item_type is not None else "string"
    if kind == "enum":
        return not all(_PLAIN_WORD.match(str(value)) for value in spec.values or ())
    return kind in ("string", "json", "file", "secret")


def _shell_code(task: Task) -> Iterator[tuple[Loc, str]]:
    """(loc within the task, text) of each template a shell reads as code."""
    if isinstance(task.command, str):
        yield ("command",), task.command
    elif task.command is not None:
        words = list(task.command)
        if _runs_shell(words):
            for index, word in enumerate(words[1:], start=1):
                if word.startswith("-") and not word.startswith("--") and "c" in word:
                    if index + 1 < len(words):
                        yield ("command", index + 1), words[index + 1]
                    break
    if task.script is not None:
        interpreter = task.interpreter
        words = shlex.split(interpreter) if isinstance(interpreter, str) else list(interpreter)
        if _runs_shell(words):
            yield ("script",), task.script


def _runs_shell(words: Sequence[str]) -> bool:
    """`sh`, `/bin/bash -e`, `/usr/bin/env bash`, `busybox sh`."""
    names = [posixpath.basename(word) for word in words[:2]]
    if names and names[0] in ("env", "busybox") and len(names) > 1:
        return names[1] in SHELLS
    return bool(names) and names[0] in SHELLS


def _variable_taints(flow: Flow, free: frozenset[str]) -> dict[str, Taint]:
    """For each variable, the free-text inputs its rendered text carries unquoted."""
    taints: dict[str, Taint] = {name: {} for name in flow.variables}
    for _ in range(len(taints) + 1):  # variables may use variables: until nothing changes
        changed = False
        for name, value in flow.variables.items():
            found: Taint = {}
            for _loc, source in _strings(value, ("variables", name)):
                for _line, taint in _tainted_outputs(source, free, taints):
                    for input_id in taint:
                        found.setdefault(input_id, f"variables.{name}")
            if found.keys() - taints[name].keys():
                taints[name] = {**found, **taints[name]}
                changed = True
        if not changed:
            break
    return taints


def _unquoted(source: str, free: frozenset[str], variables: Mapping[str, Taint]) -> list[str]:
    multi_line = "\n" in source.rstrip("\n")
    messages: dict[str, str] = {}  # one warning per input and field
    for line, taint in _tainted_outputs(source, free, variables):
        for input_id, reference in sorted(taint.items()):
            if input_id in messages:
                continue
            where = f"line {line}: " if multi_line else ""
            carries = "" if reference == f"inputs.{input_id}" else f" (input {input_id!r})"
            messages[input_id] = (
                f"{where}{{{{ {reference} }}}}{carries} reaches shell code unquoted: "
                f"-i {input_id}='x; rm -rf ~' would run a command of its own; "
                f"write {{{{ {reference} | shell_quote }}}}"
            )
    return list(messages.values())


@lru_cache(maxsize=1024)
def _parse(source: str) -> nodes.Template | None:
    if not is_template(source):
        return None
    try:
        compile_template(source)  # refuses what is too large to parse quickly
        return ENVIRONMENT.parse(source)
    except TemplateSyntaxError:
        return None  # reported as a problem by find_template_problems


def _tainted_outputs(
    source: str, free: frozenset[str], variables: Mapping[str, Taint]
) -> list[tuple[int, Taint]]:
    """(line, taint) of each value a template prints that carries free-text inputs."""
    tree = _parse(source)
    if tree is None:
        return []
    tracer = _Tracer(free, variables)
    tracer.follow_assignments(tree)
    found: list[tuple[int, Taint]] = []
    for output in _outputs(tree):
        for child in output.nodes:
            taint = tracer.taint(child)
            if taint:
                found.append((child.lineno, taint))
    return found


def _outputs(node: nodes.Node) -> Iterator[nodes.Output]:
    """The `Output` nodes of a template that reach its text: not those of `{% set %}`
    blocks (their text goes to a name: followed by `_Tracer`), nor those inside a
    `{% filter shell_quote %}` block."""
    for child in node.iter_child_nodes():
        if isinstance(child, nodes.Output):
            yield child
        elif isinstance(child, nodes.AssignBlock) or (
            isinstance(child, nodes.FilterBlock) and _quoting(child.filter)
        ):
            continue
        else:
            yield from _outputs(child)


def _quoting(node: nodes.Filter | None) -> bool:
    return node is not None and node.name in QUOTING_FILTERS


class _Tracer:
    """Follows free-text inputs through one template's expressions and assignments."""

    def __init__(self, free: frozenset[str], variables: Mapping[str, Taint]) -> None:
        self.free = free
        self.variables = variables
        self.names: dict[str, Taint] = {}  # `x` or `ns.attr` -> what it was set from

    def follow_assignments(self, tree: nodes.Template) -> None:
        """What each `{% set %}`, loop variable and `{% with %}` name may carry; flow-
        insensitive (a name carries what any of its assignments does), to a fixpoint."""
        kinds = (nodes.Assign, nodes.AssignBlock, nodes.For, nodes.With)
        for _ in range(8):
            before = {name: dict(taint) for name, taint in self.names.items()}
            for node in tree.find_all(kinds):
                if isinstance(node, nodes.Assign):
                    self._assign(node.target, self.taint(node.node))
                elif isinstance(node, nodes.AssignBlock):
                    carried: Taint = {}
                    if not _quoting(node.filter):
                        for output in _outputs(nodes.Template(node.body)):
                            for child in output.nodes:
                                carried.update(self.taint(child))
                    self._assign(node.target, carried)
                elif isinstance(node, nodes.For):
                    self._assign(node.target, self.taint(node.iter))
                elif isinstance(node, nodes.With):
                    for target, value in zip(node.targets, node.values, strict=False):
                        self._assign(target, self.taint(value))
            if self.names == before:
                return

    def _assign(self, target: nodes.Node, taint: Taint) -> None:
        if not taint:
            return
        if isinstance(target, nodes.Name):
            names = [target.name]
        elif isinstance(target, nodes.NSRef):
            names = [f"{target.name}.{target.attr}"]
        else:
            names = [name.name for name in target.find_all(nodes.Name)]
        for name in names:
            held = self.names.setdefault(name, {})
            for input_id, reference in taint.items():
                held.setdefault(input_id, reference)

    def taint(self, node: nodes.Node) -> Taint:
        """The free-text inputs whose text `node`'s value may contain, unquoted."""
        if isinstance(node, nodes.Getattr | nodes.Getitem):
            return self._access(node)
        if isinstance(node, nodes.Name):
            if node.name == "inputs":  # `{{ inputs }}`: all of them, as JSON
                return {input_id: "inputs" for input_id in self.free}
            return {input_id: node.name for input_id in self.names.get(node.name, {})}
        if isinstance(node, nodes.Filter):
            if node.name in QUOTING_FILTERS:
                return {}
            parts: list[nodes.Node] = [*node.args, *(pair.value for pair in node.kwargs)]
            if node.node is not None:
                parts.append(node.node)
            return self._union(parts)
        if isinstance(node, nodes.Test | nodes.Compare | nodes.Not | nodes.Const):
            return {}  # true or false, or written in the flow
        if isinstance(node, nodes.CondExpr):
            return self._union([node.expr1, *([node.expr2] if node.expr2 else [])])
        return self._union(list(node.iter_child_nodes()))

    def _access(self, node: nodes.Getattr | nodes.Getitem) -> Taint:
        base = node.node
        if isinstance(node, nodes.Getattr):
            key: str | None = node.attr
        elif isinstance(node.arg, nodes.Const) and isinstance(node.arg.value, str):
            key = node.arg.value
        else:
            key = None
        if isinstance(base, nodes.Name):
            if base.name == "inputs":
                if key is None:  # `inputs[name]`: any of them
                    return {input_id: "inputs[...]" for input_id in self.free}
                return {key: f"inputs.{key}"} if key in self.free else {}
            if base.name == "variables" and key is not None:
                return {input_id: f"variables.{key}" for input_id in self.variables.get(key, {})}
            held = f"{base.name}.{key}"
            if key is not None and held in self.names:
                return {input_id: held for input_id in self.names[held]}
        return self.taint(base)

    def _union(self, parts: Sequence[nodes.Node]) -> Taint:
        found: Taint = {}
        for part in parts:
            for input_id, reference in self.taint(part).items():
                found.setdefault(input_id, reference)
        return found
