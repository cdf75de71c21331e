"""Read a flow file into a validated `Flow`, or report every problem in it at once.

    path -> bytes -> text -> YAML node tree -> plain data + line map -> Flow
         -> graph checks (dag) and file checks (build folders) -> LoadedFlow

Each problem names the file, the line and column, and the field (`tasks[1] (load).image`),
so a user fixes them all in one pass. Whatever the file holds, the only exception that
leaves this module is `FlowError`.
"""

from __future__ import annotations

import hashlib
import operator
import os
import re
import types
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from runner import dag, settings
from runner.errors import FlowError, Loc, PolicyError, Problem
from runner.flow import IDENTIFIER, Flow, Task
from runner.lineendings import CRLF_SAMPLE_BYTES, crlf_message, has_crlf_shebang
from runner.messages import did_you_mean, shorten
from runner.policy import (
    MAX_VARIABLE_BYTES,
    HostPolicy,
    check_environment_size,
    check_inside_folder,
)
from runner.template_checks import find_shell_warnings, find_template_problems
from runner.templating import is_template
from runner.triggers.models import find_trigger_problems
from runner.values import InputType

__all__ = ["LineMap", "LoadedFlow", "load_flow", "parse_flow"]

Position = tuple[int, int]
"""(line, column) in the file, both 1-based."""

# Guards against files that are valid YAML but absurd: deep nesting exhausts the stack,
# and aliases of aliases ("billion laughs") expand to more values than memory holds.
_MAX_DEPTH = 100
_MAX_VALUES = 250_000

_MAP_TAG = "tag:yaml.org,2002:map"
_SEQ_TAG = "tag:yaml.org,2002:seq"
_MERGE_TAG = "tag:yaml.org,2002:merge"
_NULL_TAG = "tag:yaml.org,2002:null"
_STR_TAG = "tag:yaml.org,2002:str"
_TYPED_TAGS = frozenset(
    f"tag:yaml.org,2002:{name}" for name in ("bool", "int", "float", "timestamp")
)
_SIMPLE_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")


class LineMap(Mapping[Loc, Position]):
    """Where each mapping key and sequence item of a flow file starts: loc -> (line, column).

    A loc is the path pydantic uses: `("tasks", 1, "image")`. The root is `()`.

    Kept as a tree with one `_Level` per mapping or list of the file, each position packed
    into one int: a 10,000-task flow has 60,000 marks, and a tuple key and a tuple value
    for each would be 120,000 objects for the garbage collector to walk, while a dict of
    names or indexes to ints is not tracked by it at all.
    """

    def __init__(self, marks: Mapping[Loc, Position] | None = None) -> None:
        self._top: int | None = None  # the position of the root, ()
        self._root = _Level()
        for loc, (line, column) in (marks or {}).items():
            packed = _pack(line, column)
            if not loc:
                self._top = packed
                continue
            level = self._root
            for part in loc[:-1]:
                level = level.level(part)
            level.at[loc[-1]] = packed

    def __getitem__(self, loc: Loc) -> Position:
        if not loc:
            if self._top is None:
                raise KeyError(loc)
            return _unpack(self._top)
        level = self._root
        for part in loc[:-1]:
            inner = level.inner.get(part)
            if inner is None:
                raise KeyError(loc)
            level = inner
        packed = level.at.get(loc[-1])
        if packed is None:
            raise KeyError(loc)
        return _unpack(packed)

    def __iter__(self) -> Iterator[Loc]:
        if self._top is not None:
            yield ()
        yield from self._root.locs(())

    def __len__(self) -> int:
        return (self._top is not None) + self._root.count()

    def __repr__(self) -> str:
        return f"LineMap({len(self)} marks)"

    def nearest(self, loc: Sequence[str | int]) -> Position | None:
        """The position of `loc`, else of its deepest ancestor written in the file."""
        found = self._top
        level: _Level | None = self._root
        for part in loc:
            if level is None:
                break
            packed = level.at.get(part)
            if packed is not None:
                found = packed
            level = level.inner.get(part)
        return None if found is None else _unpack(found)


class _Level:
    """The marks inside one mapping or list of a file: `at` holds the packed position of
    each key (or index), `inner` the level of each one holding a mapping or a list."""

    __slots__ = ("at", "inner")

    def __init__(self) -> None:
        self.at: dict[str | int, int] = {}
        self.inner: dict[str | int, _Level] = {}

    def level(self, part: str | int) -> _Level:
        """The level of `part`, made if new."""
        found = self.inner.get(part)
        if found is None:
            found = self.inner[part] = _Level()
        return found

    def locs(self, prefix: Loc) -> Iterator[Loc]:
        for part in self.at:
            yield (*prefix, part)
            if part in self.inner:
                yield from self.inner[part].locs((*prefix, part))
        for part, inner in self.inner.items():
            if part not in self.at:
                yield from inner.locs((*prefix, part))

    def count(self) -> int:
        return len(self.at) + sum(inner.count() for inner in self.inner.values())


_COLUMN_BITS = 32


def _pack(line: int, column: int) -> int:
    return line << _COLUMN_BITS | column


def _unpack(packed: int) -> Position:
    return packed >> _COLUMN_BITS, packed & ((1 << _COLUMN_BITS) - 1)


@dataclass(frozen=True)
class LoadedFlow:
    """A valid flow and where it came from: its text, revision and line marks."""

    flow: Flow
    path: Path
    """Absolute path of the flow file."""
    source: str
    """The text of the file, as read (without a UTF-8 BOM)."""
    revision: str
    """First 12 hex digits of the sha256 of the file's bytes."""
    lines: LineMap = field(default_factory=LineMap, repr=False)
    file: str = ""
    """The path as the user gave it, for messages (defaults to `path`)."""
    warnings: tuple[Problem, ...] = ()
    """What is allowed but likely a mistake, with file and line, for `runner validate` to
    print: a value given with `-i` reaching shell code unquoted, a script of `files:` with
    Windows line endings."""
    crlf_files: tuple[str, ...] = ()
    """Files of `files:` (relative to the flow's folder) with CRLF endings and a `#!` line:
    a task that runs one and fails says why."""

    def __post_init__(self) -> None:
        if not self.file:
            object.__setattr__(self, "file", str(self.path))

    @property
    def base_dir(self) -> Path:
        """The flow file's folder: `build:` and relative volume sources start here."""
        return self.path.parent

    def line_of(self, loc: Sequence[str | int]) -> int | None:
        """The line of `loc` (or of its deepest ancestor in the file), 1-based."""
        position = self.lines.nearest(loc)
        return position[0] if position else None


def load_flow(path: str | Path, *, policy: HostPolicy | None = None) -> LoadedFlow:
    """Read and check the flow file at `path`; raise FlowError listing every problem.

    Volumes and networks written in the file are checked against `policy` (by default
    the operator's, `HostPolicy.from_env()`: a flow valid here may be refused on a
    runner that allows less, and each refusal names the setting that would allow it).
    A bad setting raises SettingError.
    """
    file = os.fspath(path)
    limit = settings.max_flow_bytes()
    try:
        # At most one byte past the limit is read: a 20 GB file must not be loaded whole.
        with Path(path).open("rb") as stream:
            raw = stream.read(limit + 1)
    except IsADirectoryError as exc:
        raise _fail(file, "this is a folder, not a flow file") from exc
    except FileNotFoundError as exc:
        raise _fail(file, "no such file") from exc
    except OSError as exc:
        raise _fail(file, f"cannot read the file: {exc.strerror or exc}") from exc
    except ValueError as exc:  # an embedded NUL byte in the path
        raise _fail(file, f"not a usable path: {exc}") from exc
    _check_size(file, len(raw), limit)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        message = (
            f"not UTF-8 text: byte 0x{raw[exc.start]:02x} cannot be decoded; save the file as UTF-8"
        )
        raise FlowError([Problem(file, line, None, "", message)]) from exc
    with dag.collections_deferred():
        return _load(text, raw, path, policy)


def parse_flow(text: str, *, path: str | Path, policy: HostPolicy | None = None) -> LoadedFlow:
    """Check flow text as if it were read from `path` (which need not exist, but `build:`
    folders are looked up relative to it), as `load_flow` does."""
    raw = text.encode("utf-8", errors="surrogatepass")
    _check_size(os.fspath(path), len(raw), settings.max_flow_bytes())
    with dag.collections_deferred():
        return _load(text, raw, path, policy)


def _fail(file: str, message: str) -> FlowError:
    return FlowError([Problem(file, None, None, "", message)])


def _check_size(file: str, size: int, limit: int) -> None:
    if size > limit:
        raise _fail(
            file,
            f"the file is larger than {limit:,} bytes, the most a flow file may hold"
            f" (raise {settings.MAX_FLOW_BYTES_ENV} to read bigger ones)",
        )


def _load(text: str, raw: bytes, path: str | Path, policy: HostPolicy | None) -> LoadedFlow:
    file = os.fspath(path)
    policy = policy if policy is not None else HostPolicy.from_env()
    absolute = Path(os.path.abspath(path))
    text = text.removeprefix("\ufeff")
    data, lines, issues = _read_yaml(file, text)
    report = _Report(file, lines, data)
    for issue in issues:
        report.add(issue.loc, issue.message, issue.position)
    flow: Flow | None = None
    if data is not None and not any(issue.fatal for issue in issues):
        try:
            flow = Flow.model_validate(data)
        except ValidationError as exc:
            _explain(exc.errors(), report)
        # The graph and file checks run even when some fields are wrong, so that one
        # pass over the file shows everything to fix.
        graph = flow or _graph_of(data)
        if graph is not None:
            graph_problems = dag.find_problems(graph)
            for loc, message in graph_problems:
                report.add(loc, message)
            if flow is not None and not graph_problems:
                # Templates are checked against the plan: `outputs.x` must name a task
                # that runs before the one using it.
                upstream = dag.task_upstream(flow)
                for loc, message in find_template_problems(flow, upstream.__getitem__):
                    report.add(loc, message)
        if flow is not None:
            for loc, message in find_trigger_problems(flow):
                report.add(loc, message)
        _check_input_ids(data, report)
        _check_build_folders(data, absolute.parent, report)
        if flow is not None:
            _check_host_access(flow, absolute.parent, policy, report)
    if flow is None and not report.problems:  # not expected: every path above reports why
        report.add((), "the flow is not valid")
    if report.problems or flow is None:
        raise FlowError(report.sorted())
    warnings = _Report(file, lines, data)
    for loc, message in find_shell_warnings(flow):
        warnings.add(loc, message)
    crlf = _crlf_scripts(flow, absolute.parent)
    for index, name in crlf:
        warnings.add(("files", index), crlf_message(name))
    return LoadedFlow(
        flow=flow,
        path=absolute,
        source=text,
        revision=hashlib.sha256(raw).hexdigest()[:12],
        lines=report.lines,
        file=file,
        warnings=tuple(warnings.sorted()),
        crlf_files=tuple(name for _, name in crlf),
    )


_CRLF_SCAN_LIMIT = 1_000
"""Files of `files:` looked at for CRLF endings (a flow that ships more is not slowed)."""


def _crlf_scripts(flow: Flow, base_dir: Path) -> list[tuple[int, str]]:
    """(index of the `files:` entry, file name) of every script it ships with Windows line
    endings and a `#!` line, which fails in a Linux container with `$'\r': command not
    found`. Reads the first bytes of at most `_CRLF_SCAN_LIMIT` files."""
    found: list[tuple[int, str]] = []
    seen = 0
    for index, pattern in enumerate(flow.files):
        root = base_dir / pattern
        candidates = sorted(base_dir.glob(pattern)) if any(c in pattern for c in "*?[") else [root]
        for candidate in candidates:
            files = sorted(candidate.rglob("*")) if candidate.is_dir() else [candidate]
            for path in files:
                if seen >= _CRLF_SCAN_LIMIT:
                    return found
                if not path.is_file():
                    continue
                seen += 1
                try:
                    with path.open("rb") as handle:
                        head = handle.read(CRLF_SAMPLE_BYTES)
                except OSError:
                    continue  # reported when the run packs the files
                if has_crlf_shebang(head):
                    found.append((index, path.relative_to(base_dir).as_posix()))
    return found


# --- YAML -> plain data with line marks ---------------------------------------------------


@dataclass(frozen=True)
class _Issue:
    loc: Loc
    message: str
    position: Position | None
    fatal: bool = False
    """The data is incomplete, so validating it would only add confusing problems."""


class _Stop(Exception):
    """Reading cannot go on (too deep, too big); carries the one issue to report."""

    def __init__(self, issue: _Issue) -> None:
        self.issue = issue


def _read_yaml(file: str, text: str) -> tuple[dict[str, Any] | None, LineMap, list[_Issue]]:
    """The top-level mapping of `text`, the position of every key and item, and what was wrong.

    Raises FlowError at once for a syntax error: nothing after it can be trusted.
    """
    try:
        root = _compose(text)
    except yaml.MarkedYAMLError as exc:
        raise FlowError([_syntax_problem(file, exc)]) from exc
    except yaml.reader.ReaderError as exc:
        line = text.count("\n", 0, exc.position) + 1
        column = exc.position - (text.rfind("\n", 0, exc.position) + 1) + 1
        message = f"character {chr(exc.character)!r} (#x{exc.character:04x}) is not allowed in YAML"
        raise FlowError([Problem(file, line, column, "", message)]) from exc
    except yaml.YAMLError as exc:
        raise _fail(file, f"not valid YAML: {exc}") from exc
    except RecursionError as exc:
        raise _fail(file, "the YAML is nested too deeply to read") from exc
    if root is None or (isinstance(root, yaml.ScalarNode) and root.tag == _NULL_TAG):
        raise _fail(file, "the file is empty; a flow needs at least `id` and `tasks`")
    reader = _TreeReader()
    root_position = _position(root)
    lines = reader.lines
    lines._top = _pack(*root_position)
    try:
        data = reader.read(root, (), Flow, lines._root)
    except _Stop as stop:
        return None, lines, [*reader.issues, stop.issue]
    if not isinstance(data, dict):
        message = f"a flow file must be a mapping of fields (id, tasks, ...), not {_describe(data)}"
        return None, lines, [*reader.issues, _Issue((), message, root_position, fatal=True)]
    return data, lines, reader.issues


def _libyaml_loader() -> Any:
    """libyaml's parser and composer (None when PyYAML was built without it), with a
    quicker `resolve`. The composer asks the Python resolver for the tag of every node,
    and PyYAML's own concatenates two lists of regexps each time: on a 10,000-task flow,
    about a quarter of the composing time. This one tries the same regexps in the same
    order, from a table made once, so the tags are the same."""
    try:
        from yaml import CSafeLoader
    except ImportError:
        return None

    class FastLoader(CSafeLoader):
        def __init__(self, stream: str) -> None:
            super().__init__(stream)
            # first character -> the regexps to try in order, as BaseResolver.resolve tries
            # them (those for that character, then those for any character)
            table: dict[Any, list[tuple[str, re.Pattern[str]]]] = self.yaml_implicit_resolvers
            anywhere = tuple(table.get(None, ()))
            self._implicit = {first: (*found, *anywhere) for first, found in table.items()}
            self._anywhere = anywhere
            self._plain = not self.yaml_path_resolvers
            if self._plain:
                # The composer calls these two around every node, to follow the path for
                # path resolvers; without any, PyYAML's return at once. Builtins taking the
                # same arguments do the same nothing, without the cost of a Python call.
                self.descend_resolver = operator.is_  # type: ignore[method-assign,assignment]  # a no-op of the same arity
                self.ascend_resolver = bool  # type: ignore[method-assign,assignment]  # a no-op of the same arity

        def resolve(self, kind: type[yaml.Node], value: Any, implicit: tuple[bool, bool]) -> str:
            if not self._plain:  # path resolvers: not in a safe loader, but honoured
                return str(super().resolve(kind, value, implicit))  # type: ignore[no-untyped-call]  # untyped in the stubs
            if kind is yaml.ScalarNode:
                if implicit[0]:
                    for tag, regexp in self._implicit.get(value[:1], self._anywhere):
                        if regexp.match(value):
                            return tag
                return _STR_TAG
            return _SEQ_TAG if kind is yaml.SequenceNode else _MAP_TAG

    return FastLoader


_FAST_LOADER = _libyaml_loader()


def _compose(text: str) -> yaml.Node | None:
    """The node tree of `text`. libyaml composes a big flow several times faster, with the
    same nodes and marks; a file it rejects is composed again by PyYAML's own parser, whose
    error messages are the ones reported (a broken file is small work either way)."""
    if _FAST_LOADER is not None:
        try:
            return yaml.compose(text, Loader=_FAST_LOADER)
        except (yaml.YAMLError, RecursionError):
            pass
    return yaml.compose(text, Loader=yaml.SafeLoader)


def _syntax_problem(file: str, exc: yaml.MarkedYAMLError) -> Problem:
    mark = exc.problem_mark or exc.context_mark
    problem, context = exc.problem or "", exc.context or ""
    context_line = exc.context_mark.line + 1 if exc.context_mark else None
    if problem.startswith("but ") and context:
        # "expected a single document in the stream" + "but found another document"
        message = f"{context}, {problem}"
    elif (
        context and context_line is not None and mark is not None and context_line != mark.line + 1
    ):
        message = f"{problem} ({context} started at line {context_line})"
    elif context:
        message = f"{problem} ({context})" if problem else context
    else:
        message = problem or str(exc)
    line, column = (mark.line + 1, mark.column + 1) if mark is not None else (None, None)
    return Problem(file, line, column, "", f"YAML syntax error: {message}")


def _position(node: yaml.Node) -> Position:
    mark = node.start_mark
    return (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)


class _TreeReader:
    """Turn a composed node tree into dicts, lists and scalars, noting where each key and
    item starts. PyYAML's own constructor drops marks and keeps the last of duplicate keys
    silently, so the walk is done here."""

    def __init__(self) -> None:
        self.lines = LineMap()
        self.issues: list[_Issue] = []
        self._scalars = yaml.SafeLoader("")
        self._open: set[int] = set()
        self._count = 0

    def read(
        self, node: yaml.Node, loc: Loc, schema: Any = Flow, level: _Level | None = None
    ) -> Any:
        """Plain data for `node` at `loc`, where the flow format expects a `schema` value.
        The marks inside a mapping or list go to `level` (`loc`'s own; by default, nowhere)."""
        self._count += 1
        if self._count > _MAX_VALUES:
            message = f"the file expands to more than {_MAX_VALUES:,} values (aliases of aliases?)"
            raise _Stop(_Issue(loc, message, _position(node), fatal=True))
        if len(loc) > _MAX_DEPTH:
            message = f"values are nested more than {_MAX_DEPTH} levels deep"
            raise _Stop(_Issue(loc[:3], message, _position(node), fatal=True))
        if isinstance(node, _Scalar):
            return self._scalar(node, loc, schema)
        key = id(node)
        if key in self._open:
            self._issue(
                loc, "an alias refers to a value that contains it (a recursive alias)", node
            )
            return None
        self._open.add(key)
        if level is None:
            level = _Level()
        try:
            if isinstance(node, _Mapping) and node.tag == _MAP_TAG:
                return self._mapping(node, loc, schema, level)
            if isinstance(node, _Sequence) and node.tag == _SEQ_TAG:
                return self._sequence(node, loc, schema, level)
            self._issue(loc, f"the YAML tag {node.tag!r} is not supported", node)
            return None
        finally:
            self._open.discard(key)

    def _issue(self, loc: Loc, message: str, node: yaml.Node) -> None:
        self.issues.append(_Issue(loc, message, _position(node), fatal=True))

    def _scalar(self, node: yaml.ScalarNode, loc: Loc, schema: Any) -> Any:
        if not node.style and node.tag in _TYPED_TAGS and _wants_text(schema):
            # Where the format wants text, keep what the user wrote: `PYTHON: 3.10` is
            # "3.10" (not 3.1), `user: 1000` is "1000", `DEBUG: yes` is "yes".
            return node.value
        if node.tag == _STR_TAG:  # most scalars of a flow: the text is the value
            return node.value
        try:
            return self._scalars.construct_object(node, deep=True)
        except yaml.MarkedYAMLError as exc:
            self._issue(loc, f"cannot read {node.value!r}: {exc.problem}", node)
        except (ValueError, TypeError, OverflowError, LookupError, AttributeError):
            # e.g. an int of more than 4300 digits, or `!!float abc`; PyYAML's constructors
            # trust their resolver, so an explicit tag on other text fails in odd ways:
            # `!!bool x` (KeyError), `!!int ''` (IndexError), `!!timestamp x` (AttributeError)
            text: str = node.value
            shown = repr(text) if len(text) <= 40 else f"{text[:20]!r}... ({len(text)} characters)"
            self._issue(loc, f"cannot read {shown} as {node.tag.rsplit(':', 1)[-1]}", node)
        return None

    # `_sequence` and `_mapping` read a string scalar (most values of a big flow) in place,
    # without the calls `read` makes: the same value, counted the same way. Past a limit
    # (`limit` is then 0), `read` takes it and reports the limit.

    def _sequence(self, node: yaml.SequenceNode, loc: Loc, schema: Any, level: _Level) -> list[Any]:
        items: list[Any] = []
        marks = level.at
        limit = _MAX_VALUES if len(loc) < _MAX_DEPTH else 0
        for index, item in enumerate(node.value):
            mark = item.start_mark  # composed nodes always have their marks
            marks[index] = (mark.line + 1) << _COLUMN_BITS | (mark.column + 1)
            if item.tag == _STR_TAG and type(item) is _Scalar and self._count < limit:
                self._count += 1
                items.append(item.value)
            else:
                inner = None if type(item) is _Scalar else level.level(index)
                items.append(self.read(item, (*loc, index), _child(schema, index), inner))
        return items

    def _mapping(
        self, node: yaml.MappingNode, loc: Loc, schema: Any, level: _Level
    ) -> dict[str, Any]:
        result: dict[str, Any] = {}
        pairs: list[tuple[yaml.Node, yaml.Node]] = node.value
        for key_node, _ in pairs:
            if key_node.tag == _MERGE_TAG:
                pairs = self._merge(pairs, loc, schema, result, level)
                break
        first: dict[str, int] = {}  # key -> its packed position
        marks = level.at
        limit = _MAX_VALUES if len(loc) < _MAX_DEPTH else 0
        for key_node, value_node in pairs:
            mark = key_node.start_mark  # composed nodes always have their marks
            position = (mark.line + 1) << _COLUMN_BITS | (mark.column + 1)
            if not isinstance(key_node, _Scalar):
                self._issue(loc, "a key must be a plain name, not a list or a mapping", key_node)
                continue
            # Keys are names (fields, variables, labels): keep their text, so that `on:` or
            # `1:` stay strings instead of YAML 1.1's True and 1.
            key: str = key_node.value
            if key in first:
                line = _unpack(first[key])[0]
                message = f"duplicate key {key!r} (first at line {line}); YAML would silently keep only the last"
                self.issues.append(_Issue((*loc, key), message, _unpack(position)))
            else:
                first[key] = position
            marks[key] = position
            if value_node.tag == _STR_TAG and type(value_node) is _Scalar and self._count < limit:
                self._count += 1
                result[key] = value_node.value
            else:
                inner = None if type(value_node) is _Scalar else level.level(key)
                result[key] = self.read(value_node, (*loc, key), _child(schema, key), inner)
        return result

    def _merge(
        self,
        pairs: list[tuple[yaml.Node, yaml.Node]],
        loc: Loc,
        schema: Any,
        result: dict[str, Any],
        level: _Level,
    ) -> list[tuple[yaml.Node, yaml.Node]]:
        """Read the mappings `<<` merges into `result`; return the other pairs."""
        merges: list[yaml.Node] = []
        for key_node, value_node in pairs:
            if key_node.tag == _MERGE_TAG:
                # `<<: *base` (or a list of them): keys of its own win, then earlier merges
                sources = (
                    value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
                )
                merges.extend(sources)
        for source in reversed(merges):
            if isinstance(source, yaml.MappingNode):
                merged = self.read(source, loc, schema, level)
                if isinstance(merged, dict):
                    result.update(merged)
            else:
                self._issue(
                    loc, "`<<` merges a mapping (or a list of mappings) into this one", source
                )
        return [pair for pair in pairs if pair[0].tag != _MERGE_TAG]


_Scalar, _Mapping, _Sequence = yaml.ScalarNode, yaml.MappingNode, yaml.SequenceNode


# --- pydantic errors -> problems ----------------------------------------------------------


class _Report:
    """Problems collected for one file, each placed on a line and named by a readable field."""

    def __init__(self, file: str, lines: LineMap, data: Mapping[str, Any] | None) -> None:
        self.file = file
        self.lines = lines
        self.data = data or {}
        self.problems: list[Problem] = []
        self._seen: set[Problem] = set()

    def add(self, loc: Loc, message: str, position: Position | None = None) -> None:
        where = position or self.lines.nearest(loc)
        line, column = where if where else (None, None)
        problem = Problem(self.file, line, column, self.field_name(loc), message)
        if problem not in self._seen:  # e.g. two union members failing the same way
            self._seen.add(problem)
            self.problems.append(problem)

    def sorted(self) -> list[Problem]:
        return sorted(self.problems, key=lambda p: (p.line is None, p.line or 0, p.column or 0))

    def field_name(self, loc: Loc) -> str:
        """`tasks[1] (load).env.HOME` for ("tasks", 1, "env", "HOME")."""
        out = ""
        for depth, part in enumerate(loc):
            if isinstance(part, int):
                out += f"[{part}]"
                label = self._label(loc[: depth + 1])
                if label:
                    out += f" ({label})"
            elif _SIMPLE_KEY.match(part):
                out += f".{part}" if out else part
            else:
                out += f"[{part!r}]"
        return out

    def _label(self, loc: Loc) -> str | None:
        """The id of the task or input at `loc`, when the file gives a usable one."""
        if len(loc) != 2 or loc[0] not in ("tasks", "errors", "finally", "inputs", "triggers"):
            return None
        item = _follow(self.data, loc)
        ident = item.get("id") if isinstance(item, dict) else None
        if isinstance(ident, str) and 0 < len(ident) <= 60 and "\n" not in ident:
            return ident
        return None

    def inherited(self, loc: Loc) -> Loc | None:
        """For a loc inside tasks[i] whose value the task took from `defaults:`, the loc of
        that value under `defaults` (so an error there is reported once, not per task)."""
        if len(loc) < 3 or loc[0] not in _TASK_LISTS or not isinstance(loc[1], int):
            return None
        task, defaults = _follow(self.data, loc[:2]), self.data.get("defaults")
        for end in range(3, len(loc) + 1):
            if _follow(task, loc[2:end]) is _MISSING:
                inner = loc[2:end]
                return ("defaults", *inner) if _follow(defaults, inner) is not _MISSING else None
        return None


_MISSING = object()
_TASK_LISTS = ("tasks", "errors", "finally")


def _follow(data: Any, loc: Sequence[str | int]) -> Any:
    """The value at `loc` in plain data, or _MISSING."""
    for part in loc:
        if isinstance(data, dict) and isinstance(part, str):
            data = data.get(part, _MISSING)
        elif isinstance(data, list) and isinstance(part, int) and 0 <= part < len(data):
            data = data[part]
        else:
            return _MISSING
        if data is _MISSING:
            return _MISSING
    return data


@dataclass(frozen=True)
class _Error:
    """A pydantic error with its loc cleaned of union tags and the types met along it."""

    kind: str
    loc: Loc
    value: Any
    msg: str
    ctx: Mapping[str, Any]
    expected: Any
    """The annotation the value had to fit (Any when unknown)."""
    container: Any
    """The annotation of what holds loc[-1]: the model for a field."""
    union_at: int | None
    """len(loc) where the first union member tag was dropped."""
    union: tuple[Any, ...]

    @classmethod
    def of(cls, error: ErrorDetails) -> _Error:
        loc: list[str | int] = []
        annotation: Any = Flow
        container: Any = Any
        union_at: int | None = None
        union: tuple[Any, ...] = ()
        for part in error["loc"]:
            members = _members(annotation)
            if len(members) > 1:
                # Pydantic names the union member it tried, e.g. `str` or `tuple[str, ...]`:
                # a tag, not a step into the data.
                if union_at is None:
                    union_at, union = len(loc), members
                annotation = next((m for m in members if part in _tags(m)), Any)
                continue
            container = members[0]
            loc.append(part)
            annotation = _child(container, part)
        ctx = error.get("ctx") or {}
        if error["type"] == "union_tag_invalid":  # placed on the tag's own line (`type:`)
            container, annotation = annotation, Any
            loc.append(str(ctx.get("discriminator", "")).strip("'"))
        return cls(
            kind=error["type"],
            loc=tuple(loc),
            value=error.get("input"),
            msg=error["msg"],
            ctx=ctx,
            expected=annotation,
            container=container,
            union_at=union_at,
            union=union,
        )


def _strip(annotation: Any) -> Any:
    while get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    return annotation


def _members(annotation: Any) -> tuple[Any, ...]:
    """The types a value may have at a place: several for a union, None left out."""
    annotation = _strip(annotation)
    if get_origin(annotation) in (Union, types.UnionType):
        return tuple(_strip(m) for m in get_args(annotation) if m is not type(None))
    return (annotation,)


def _tags(annotation: Any) -> tuple[str, ...]:
    """What pydantic names a union member in a loc: its type's name or, in a union with a
    discriminator, the value of its tag field (`schedule` for a schedule trigger)."""
    if not isinstance(annotation, type):
        return (str(annotation),)
    return (annotation.__name__, *_literals(annotation))


def _literals(model: Any) -> tuple[str, ...]:
    """The values of a model's `Literal` fields: its tags in a discriminated union."""
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        return ()
    return tuple(
        str(value)
        for info in model.model_fields.values()
        if get_origin(info.annotation) is Literal
        for value in get_args(info.annotation)
    )


def _child(annotation: Any, part: str | int) -> Any:
    """The annotation of `part` inside a value of type `annotation` (Any when unknown)."""
    if annotation is Any:  # most values of a big file: skip the typing calls
        return Any
    # Every task of a big flow asks the same questions: remember the answers (an index
    # only matters as "some index"; an unhashable annotation is worked out each time).
    key = (annotation, part if isinstance(part, str) else 0)
    try:
        return _CHILD_CACHE[key]
    except KeyError:
        if len(_CHILD_CACHE) >= _CHILD_CACHE_SIZE:  # keys of free-form maps (env) are many
            _CHILD_CACHE.clear()
        found = _CHILD_CACHE[key] = _find_child(annotation, part)
        return found
    except TypeError:
        return _find_child(annotation, part)


_CHILD_CACHE: dict[tuple[Any, str | int], Any] = {}
_CHILD_CACHE_SIZE = 4096


def _find_child(annotation: Any, part: str | int) -> Any:
    for member in _members(annotation):
        if isinstance(member, type) and issubclass(member, BaseModel):
            info = _field_named(member, part) if isinstance(part, str) else None
            if info is not None:
                return info.annotation
            continue
        origin, args = get_origin(member), get_args(member)
        if origin in (tuple, list) and args and isinstance(part, int):
            return args[0]
        if origin is dict and len(args) == 2 and isinstance(part, str):
            return args[0] if part == "[key]" else args[1]
    return Any


def _field_named(model: type[BaseModel], name: str) -> Any:
    """The field `name` is in the file: its alias (`finally`) or its own name."""
    info = model.model_fields.get(name)
    if info is not None:
        return info
    return next((f for f in model.model_fields.values() if f.alias == name), None)


def _wants_text(annotation: Any) -> bool:
    """True where the format takes a string and no other scalar (not Any, not int)."""
    members = _members(annotation)
    return str in members and not any(m in (int, float, bool, Any) for m in members)


def _explain(raw_errors: list[ErrorDetails], report: _Report) -> None:
    """Turn pydantic's errors into one readable problem per thing to fix."""
    errors = [_Error.of(e) for e in raw_errors]
    locs = [e.loc for e in errors]
    kept: list[_Error] = []
    for error in errors:
        # A list whose items failed also reports "too short" (no valid item left): noise.
        if error.kind == "too_short" and any(
            len(other) > len(error.loc) and other[: len(error.loc)] == error.loc for other in locs
        ):
            continue
        source = report.inherited(error.loc)
        if source is not None and any(other[: len(source)] == source for other in locs):
            continue  # reported where `defaults:` sets it
        kept.append(error)
    unions: dict[Loc, list[_Error]] = {}
    for error in kept:
        if error.union_at is None:
            report.add(error.loc, _message(error))
        else:
            unions.setdefault(error.loc[: error.union_at], []).append(error)
    for loc, tried in unions.items():
        # One error per union member tried. If the value had the right shape for a member
        # (an item of the list is wrong, or a check failed), those errors say what to fix;
        # otherwise the value fits no member at all.
        specific = [e for e in tried if len(e.loc) > len(loc) or not e.kind.endswith("_type")]
        for error in specific:
            report.add(error.loc, _message(error))
        if not specific:
            kinds = " or ".join(dict.fromkeys(_kind(m) for m in tried[0].union))
            report.add(loc, f"expected {kinds}, got {_describe(tried[0].value)}")


def _message(error: _Error) -> str:
    """What is wrong, for a user who knows the flow format but not pydantic."""
    kind, ctx, got = error.kind, error.ctx, _describe(error.value)
    key = str(error.loc[-1]) if error.loc else ""
    if kind == "extra_forbidden":
        model = error.container
        # The names written in a file: `finally`, not the Python name `finally_`.
        allowed = (
            [info.alias or name for name, info in model.model_fields.items()]
            if isinstance(model, type) and issubclass(model, BaseModel)
            else []
        )
        hint = did_you_mean(key, allowed)
        if not hint and allowed:
            hint = f"; known fields: {', '.join(allowed)}"
        return f"unknown field {shorten(repr(key))}{hint}"
    if kind == "missing":
        return f"required field {key!r} is missing"
    if kind == "union_tag_invalid":  # the `type:` of a trigger names no kind of trigger
        tags = re.findall(r"'([^']*)'", str(ctx.get("expected_tags", "")))
        tag = str(ctx.get("tag", ""))
        return f"unknown {key} {tag!r}{did_you_mean(tag, tags)}; use one of {', '.join(map(repr, tags))}"
    if kind == "union_tag_not_found":
        field = str(ctx.get("discriminator", "")).strip("'")
        tags = [tag for member in _members(error.expected) for tag in _literals(member)]
        return f"required field {field!r} is missing: one of {', '.join(map(repr, tags))}"
    if kind in ("enum", "literal_error"):
        expected = _strip(error.expected)
        if isinstance(expected, type) and issubclass(expected, Enum):
            choices = [str(member.value) for member in expected]
        else:
            choices = re.findall(r"'([^']*)'", str(ctx.get("expected", "")))
        hint = did_you_mean(error.value, choices) if isinstance(error.value, str) else ""
        return f"expected one of {', '.join(map(repr, choices))}, got {got}{hint}"
    if kind in ("value_error", "assertion_error"):
        cause = ctx.get("error")
        if cause is not None and str(cause):
            return str(cause)
        return error.msg.removeprefix("Value error, ").removeprefix("Assertion failed, ")
    if kind == "string_pattern_mismatch":
        if ctx.get("pattern") == IDENTIFIER:
            return (
                f"{got} is not a valid id: use letters, digits, '.', '_' and '-', "
                "starting with a letter or a digit"
            )
        return f"{got} does not match {ctx.get('pattern')}"
    if kind == "string_too_short":
        n = ctx.get("min_length", 1)
        return "must not be empty" if n == 1 else f"must be at least {n} characters long"
    if kind == "string_too_long":
        return (
            f"must be at most {ctx.get('max_length')} characters long, got {len(str(error.value))}"
        )
    if kind in ("too_short", "too_long"):
        bound = ctx.get("min_length") if kind == "too_short" else ctx.get("max_length")
        if error.loc == ("tasks",):
            return "a flow needs at least one task"
        noun = "item" if bound == 1 else "items"
        return f"needs {'at least' if kind == 'too_short' else 'at most'} {bound} {noun}, got {ctx.get('actual_length')}"
    if kind in ("greater_than_equal", "greater_than", "less_than_equal", "less_than"):
        words = {
            "greater_than_equal": ("at least", "ge"),
            "greater_than": ("more than", "gt"),
            "less_than_equal": ("at most", "le"),
            "less_than": ("less than", "lt"),
        }
        phrase, name = words[kind]
        return f"must be {phrase} {ctx.get(name)}, got {got}"
    if kind.endswith(("_type", "_parsing")) or kind in ("int_from_float", "model_attributes_type"):
        wanted = _kind(error.expected)
        return f"expected {wanted}, got {got}"
    return f"{error.msg.replace('Input should be', 'should be')}, got {got}"


def _kind(annotation: Any) -> str:
    """`a string`, `a list of strings`, ... for a message."""
    members = _members(annotation)
    if len(members) > 1:
        return " or ".join(dict.fromkeys(_kind(member) for member in members))
    annotation = members[0]
    names: dict[Any, str] = {
        str: "a string",
        int: "an integer",
        float: "a number",
        bool: "true or false",
    }
    if annotation in names:
        return str(names[annotation])
    if isinstance(annotation, type) and issubclass(annotation, Enum):
        return "one of " + ", ".join(repr(str(m.value)) for m in annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "a mapping of fields"
    origin, args = get_origin(annotation), get_args(annotation)
    if origin in (tuple, list):
        item = _strip(args[0]) if args else Any
        if item is str:
            return "a list of strings"
        if isinstance(item, type) and issubclass(item, BaseModel):
            return "a list of mappings"
        return "a list"
    if origin is dict:
        return "a mapping"
    return "a valid value"


def _describe(value: Any) -> str:
    """A value as a message shows it: short, in YAML terms."""
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, int) and value.bit_length() > 256:
        return "a very large number"
    text = repr(value) if isinstance(value, str) else str(value)
    return text if len(text) <= 60 else text[:57] + "..."


# --- checks that need a valid flow --------------------------------------------------------


def _graph_of(data: Mapping[str, Any]) -> Flow | None:
    """Just the task ids and edges of a flow that failed validation, when they are well
    formed, so graph problems are reported alongside the others."""
    lists: dict[str, tuple[Task, ...]] = {}
    for key in ("tasks", "errors", "finally"):
        tasks = data.get(key, [])
        if not isinstance(tasks, list):
            return None
        graph: list[Task] = []
        for task in tasks:
            if not isinstance(task, dict) or not isinstance(task.get("id"), str):
                return None
            depends_on = task.get("depends_on", [])
            if not isinstance(depends_on, list) or not all(isinstance(d, str) for d in depends_on):
                return None
            graph.append(Task.model_construct(id=task["id"], depends_on=tuple(depends_on)))
        lists[key] = tuple(graph)
    return Flow.model_construct(
        id="graph", tasks=lists["tasks"], errors=lists["errors"], finally_=lists["finally"]
    )


def _check_input_ids(data: Mapping[str, Any], report: _Report) -> None:
    inputs = data.get("inputs")
    first: dict[str, int] = {}
    for index, spec in enumerate(inputs if isinstance(inputs, list) else []):
        ident = spec.get("id") if isinstance(spec, dict) else None
        if not isinstance(ident, str):
            continue
        if ident in first:
            message = f"duplicate input id {ident!r} (first used by inputs[{first[ident]}])"
            report.add(("inputs", index, "id"), message)
        else:
            first[ident] = index


def _check_build_folders(data: Mapping[str, Any], base_dir: Path, report: _Report) -> None:
    """A `build:` folder must exist (relative to the flow file) and hold a Dockerfile.

    A folder set in `defaults:` is checked once, there, if any task inherits it.
    """
    defaults = data.get("defaults")
    inherited = defaults.get("build") if isinstance(defaults, dict) else None
    folders: list[tuple[Loc, Any]] = []
    for key in _TASK_LISTS:  # `errors:` and `finally:` tasks are built too
        tasks = data.get(key)
        for index, task in enumerate(tasks if isinstance(tasks, list) else []):
            if not isinstance(task, dict):
                continue
            if task.get("build") is not None:
                folders.append(((key, index, "build"), task["build"]))
            elif task.get("image") is None and inherited is not None:
                folders.append((("defaults", "build"), inherited))
    for loc, build in dict(folders).items():
        if isinstance(build, str) and build:
            problem = _build_folder_problem(base_dir, build)
            if problem:
                report.add(loc, problem)


def _build_folder_problem(base_dir: Path, build: str) -> str | None:
    folder = Path(os.path.normpath(base_dir / build))
    try:
        if not folder.exists():
            return f"build folder {str(folder)!r} does not exist"
        if not folder.is_dir():
            return f"build path {str(folder)!r} is not a folder"
        if not (folder / "Dockerfile").is_file():
            return f"build folder {str(folder)!r} has no Dockerfile"
    except (OSError, ValueError) as exc:  # no permission; a NUL byte in the path
        return f"cannot look into build folder {str(folder)!r}: {exc}"
    return None


# Of one problem repeated in many tasks (an anchor of a huge `env:` in each), this many
# are reported, then how many more there are.
_MAX_REPEATED = 5


def _check_host_access(flow: Flow, base_dir: Path, policy: HostPolicy, report: _Report) -> None:
    """What the flow file itself says it takes from the host: volumes and networks
    written in it (templates are checked once rendered, before the container starts),
    the size of each task's environment, `files:` and file input defaults (which must
    stay in the flow's folder)."""
    folder = str(base_dir)
    for index, pattern in enumerate(flow.files):
        try:
            check_inside_folder(pattern, folder, what=shorten(repr(pattern)))
        except PolicyError as exc:
            report.add(("files", index), str(exc))
    for index, spec in enumerate(flow.inputs):
        if spec.type is InputType.FILE and isinstance(spec.default, str):
            try:
                check_inside_folder(
                    spec.default,
                    folder,
                    what=f"default {shorten(repr(spec.default))}",
                    resolve=policy.resolve,
                )
            except PolicyError as exc:
                report.add(("inputs", index, "default"), str(exc))
    env_limit = settings.max_env_bytes()
    quick_limit = min(env_limit, MAX_VARIABLE_BYTES)
    flow_env_size = _env_size(flow.env)
    too_big = 0
    for key, tasks in (("tasks", flow.tasks), ("errors", flow.errors), ("finally", flow.finally_)):
        for index, task in enumerate(tasks):
            loc: Loc = (key, index)
            for number, volume in enumerate(task.volumes):
                if not is_template(volume):
                    _report_refusal(
                        report, (*loc, "volumes", number), policy.check_volume, volume, folder
                    )
            if task.network is not None and not is_template(task.network):
                _report_refusal(report, (*loc, "network"), policy.check_network, task.network)
            # Templates count as written: rendering rarely shrinks a value much. Most
            # tasks are far below both limits: only those near one are looked at closely.
            if flow_env_size + _env_size(task.env) > quick_limit:
                env = {**flow.env, **task.env}
                try:
                    check_environment_size(env, env_limit)
                except PolicyError as exc:
                    too_big += 1
                    if too_big <= _MAX_REPEATED:
                        env_loc = (*loc, "env") if task.env else ("env",)
                        report.add(report.inherited(env_loc) or env_loc, str(exc))
    if too_big > _MAX_REPEATED:
        report.add(("tasks",), f"{too_big - _MAX_REPEATED} more tasks have an environment too big")


def _env_size(env: Mapping[str, str]) -> int:
    return sum(len(name) + len(value) + 2 for name, value in env.items())


def _report_refusal(report: _Report, loc: Loc, check: Any, *args: Any) -> None:
    try:
        check(*args)
    except PolicyError as exc:
        report.add(report.inherited(loc) or loc, str(exc))
