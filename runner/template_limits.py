"""The budgets a template renders within, enforced inside the Jinja sandbox: the size of
what it renders and of every value it builds, the time it takes, and a request to stop.

A flow is code from someone else. Jinja's sandbox keeps a template away from Python's
internals, not from the machine's memory and time: `{{ ''.center(200000000) }}` builds
200 MB at once, and two nested `range(100000)` loops run for hours in a thread that
nothing can stop. So `LimitedSandbox` checks, in the template's own compiled code:

- Before building: every operation that can build a large value from small ones checks
  the size it would build first: `*`, `+`, `~`, `%`, `str.format`, the methods taking a
  width or a count (`center`, `ljust`, `rjust`, `zfill`, `expandtabs`, `replace`, `join`,
  `translate`, `int.to_bytes`), the filters that grow text (`center`, `indent`,
  `wordwrap`, `join`, `replace`, `format`, `batch`, `slice`, `tojson`, `round`), and
  printing (or `~`, `%s`, `|string`...) a list or mapping, whose text may be far larger
  than the list.
- After building: no string longer than the size limit, no list of more items than an
  eighth of it, no integer over `MAX_INT_BITS`, no list or mapping made of more parts than
  the size limit when the values inside are counted as often as they appear (`[x, x]`
  forty times over is 2**40 parts: comparing or hashing it never ends); and everything
  built is counted: all values built during one render may take `WORK_FACTOR` times the
  size limit, which bounds the memory a template can keep (in lists, namespaces, macros).
- Time and the stop request: every iteration of every `{% for %}` (also those a loop's
  `if` skips), every call (macros, `loop()`, methods), every filter and every item of an
  iterator a filter returns counts a tick, and every few ticks the clock and
  `should_stop` are read. A template has no other way to repeat work.
- Output: the text a template renders is counted as it grows, and the text of macros,
  `{% set %}` blocks and `caller()` before it is joined.

What Jinja does in one long step of its own is replaced by an interruptible version:
`sum` (Python's adds in C), `striptags` (markupsafe's is quadratic, as a filter and as
`Markup.striptags()`), `wordwrap` (textwrap is quadratic on long words), `pprint`. Two
names are left out: `urlize` (HTML links, with regular expressions slow on long words) and
`lipsum` (it writes as much text as its arguments ask, in a loop no check sees into).

A render runs inside `run_budget` (one clock, one stop request and one count of work,
shared by every field of a task and the variables they use) and `field_budget` (the size
limit of one field). Over budget, the checks raise `OverBudget`; `runner.templating`
turns it into a TemplateError that names the field.
"""

from __future__ import annotations

import codecs
import inspect
import math
import pprint
import re
import sys
import textwrap
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, MappingView
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from types import GeneratorType
from typing import Any, NoReturn, TypeGuard, cast

from jinja2 import nodes
from jinja2.compiler import CodeGenerator, Frame
from jinja2.runtime import Context, Undefined, markup_join, str_join
from jinja2.sandbox import (
    ImmutableSandboxedEnvironment,
    SandboxedEscapeFormatter,
    SandboxedFormatter,
)
from jinja2.utils import Namespace, _PassArg, pass_context, pass_environment
from markupsafe import Markup

from runner import settings

__all__ = [
    "MAX_INT_BITS",
    "WORK_FACTOR",
    "Budget",
    "LimitedSandbox",
    "Limits",
    "OverBudget",
    "current",
    "field_budget",
    "human_size",
    "run_budget",
]

MAX_INT_BITS = 100_000
"""The largest integer a template may build (about 30,000 digits). Arithmetic on larger
ones takes seconds in one step that no check can interrupt (`a // b` is quadratic)."""

WORK_FACTOR = 64
"""All the strings and lists one render builds may take this many times the size limit."""

# The clock and `should_stop` are read every this many ticks: a tick is one loop iteration
# or one call, and reading the clock costs more than a loop iteration of Jinja's.
_TICKS_PER_CHECK = 32

_ITEM_BYTES = 8  # the size limit divided by this is the item limit

# A value this large (in characters) took long enough to build or print that the clock
# is read at once, not after `_TICKS_PER_CHECK` more steps like it.
_LARGE = 16 * 1024


class OverBudget(Exception):
    """A render went over its budget. `kind` is "size" (a value), "output" (the text),
    "time" or "stop"; `detail` says what went over (for "stop", `should_stop`'s reason).
    Not a TypeError or a ValueError: Jinja's filters catch those."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(detail)
        self.kind = kind
        self.detail = detail


@dataclass(frozen=True)
class Limits:
    """How much one render may take: `max_bytes` per rendered field (and per value built
    on the way), `timeout_s` for all the templates of one task attempt."""

    max_bytes: int = settings.DEFAULT_TEMPLATE_MAX_BYTES
    timeout_s: float = settings.DEFAULT_TEMPLATE_TIMEOUT

    @classmethod
    def from_settings(cls, environ: Mapping[str, str] | None = None) -> Limits:
        """`RUNNER_TEMPLATE_MAX_BYTES` and `RUNNER_TEMPLATE_TIMEOUT`; raises SettingError."""
        return cls(
            max_bytes=settings.template_max_bytes(environ),
            timeout_s=settings.template_timeout(environ),
        )


def human_size(size: int) -> str:
    """`1 MiB`, `512 KiB`, `10,000 bytes`: sizes as settings name them."""
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if size >= 1 << shift and size % (1 << shift) == 0:
            return f"{size >> shift} {unit}"
    return f"{size:,} bytes"


def _seconds(value: float) -> str:
    return f"{int(value)}s" if float(value).is_integer() else f"{value:g}s"


# --- the budget of a render -------------------------------------------------------------------


class _Run:
    """What the fields rendered together share: the clock, the stop request, the work."""

    __slots__ = (
        "countdown",
        "deadline",
        "kept",
        "limits",
        "max_work",
        "parts",
        "should_stop",
        "timed",
        "work",
    )

    def __init__(
        self, limits: Limits, should_stop: Callable[[], str | None] | None, *, timed: bool = True
    ) -> None:
        self.limits = limits
        self.timed = timed
        self.deadline = time.monotonic() + limits.timeout_s if timed else math.inf
        self.should_stop = should_stop
        self.max_work = WORK_FACTOR * limits.max_bytes if timed else math.inf
        self.work = 0
        self.countdown = 1  # the first tick checks
        # id -> how many values a container the template built holds, nested ones
        # counted in full (see Budget.built); `kept` keeps them alive, so no id is reused.
        self.parts: dict[int, int] = {}
        self.kept: list[Any] = []


class Budget:
    """The budget of one rendered field, and the checks the sandbox makes against it."""

    __slots__ = ("max_bytes", "max_items", "run")

    def __init__(self, run: _Run) -> None:
        self.run = run
        self.max_bytes = run.limits.max_bytes
        # A list's own memory is 8 bytes an item; and sorting or de-duplicating it in
        # one step of Python's, which nothing can interrupt, stays well under a second.
        self.max_items = max(self.max_bytes // _ITEM_BYTES, 1)

    # -- time and stop

    def tick(self) -> bool:
        """Count one step of work; every `_TICKS_PER_CHECK` steps, `check_clock`. True
        (the code generator writes it as a condition before a loop's `if`)."""
        run = self.run
        run.countdown -= 1
        if run.countdown > 0:
            return True
        return self.check_clock()

    def check_clock(self) -> bool:
        """Raise OverBudget past the deadline, or once `should_stop` gives a reason."""
        run = self.run
        run.countdown = _TICKS_PER_CHECK
        if time.monotonic() > run.deadline:
            raise OverBudget("time", f"took longer than {_seconds(run.limits.timeout_s)}")
        if run.should_stop is not None:
            reason = run.should_stop()
            if reason:
                raise OverBudget("stop", reason)
        return True

    # -- size

    def too_large(self, what: str, size: int, unit: str = "characters") -> NoReturn:
        raise OverBudget(
            "size",
            f"{what} would make {size:,} {unit}; the limit is {human_size(self.max_bytes)} "
            f"({settings.TEMPLATE_MAX_BYTES_ENV})",
        )

    def check_size(self, size: int, what: str) -> None:
        if size > self.max_bytes:
            self.too_large(what, size)

    def check_items(self, count: int, what: str) -> None:
        if count > self.max_items:
            self.too_many(what, count)

    def too_many(self, what: str, count: int) -> NoReturn:
        raise OverBudget(
            "size",
            f"{what} would make {count:,} items; the limit is {self.max_items:,} items "
            f"({settings.TEMPLATE_MAX_BYTES_ENV} / {_ITEM_BYTES})",
        )

    def check_text(self, value: Any, what: str) -> None:
        """Before `str(value)` or JSON of it: refuse a value whose text is too large.
        `what` does it: `printing`, `the string filter on`."""
        if not isinstance(value, _SMALL_TEXT):
            size = text_size(value, self.max_bytes)
            if size > _LARGE:  # printing it will take a while: read the clock first
                self.check_clock()
            if size > self.max_bytes:
                raise OverBudget(
                    "size",
                    f"{what} {_describe(value)} would make more than "
                    f"{human_size(self.max_bytes)} of text ({settings.TEMPLATE_MAX_BYTES_ENV})",
                )

    def check_int_bits(self, bits: int, what: str) -> None:
        if bits > MAX_INT_BITS:
            raise OverBudget(
                "size", f"{what} would make a number of more than {MAX_INT_BITS:,} bits"
            )

    def parts_of(self, value: Any, what: str = "it") -> int:
        """How many values `value` is made of, itself included, each value inside it
        counted as often as it appears. Raises OverBudget past `max_bytes`.

        A list may hold the same list twice, and that one the same list twice...: forty
        such steps make a value of 2**40 parts from forty small lists. Comparing two of
        them (`==`, `in`, `sort`) or hashing one (a tuple as a key) visits every part, in
        one step of Python's that nothing interrupts; printing one could never fit
        anyway, each part printing at least one character. So no value a template
        builds may have more parts than the size limit.

        Counted once per container and remembered for the rest of the render (the
        containers a template reaches are never changed: the sandbox is immutable).
        """
        if not isinstance(value, _CONTAINERS):
            return 1
        run = self.run
        known = run.parts.get(id(value))
        if known is not None:
            return known
        limit = self.max_bytes
        if _flat(value):  # most lists: counted without a step of Python's per item
            parts = 1 + len(_items_of(value))  # type: ignore[arg-type]
            if parts > limit:
                self._too_many_parts(what, parts)
            self._remember(value, parts)
            return parts
        # The containers being counted, outermost first: [container, its items, parts].
        frames: list[list[Any]] = [[value, iter(_items_of(value)), 1]]
        on_path = {id(value)}
        steps = 0
        while True:
            frame = frames[-1]
            child = next(frame[1], _END)
            steps += 1
            if steps % 4096 == 0:
                self.tick()
            if child is _END:
                frames.pop()
                on_path.discard(id(frame[0]))
                self._remember(frame[0], frame[2])
                if not frames:
                    return frame[2]  # type: ignore[no-any-return]
                size = frame[2]
                frame = frames[-1]
            elif isinstance(child, _CONTAINERS):
                size = run.parts.get(id(child))
                if size is None:
                    if id(child) in on_path:
                        self._too_many_parts(what, limit + 1)
                    frames.append([child, iter(_items_of(child)), 1])
                    on_path.add(id(child))
                    continue
            else:
                size = 1
            frame[2] += size
            if frame[2] > limit:
                self._too_many_parts(what, frame[2])

    def _remember(self, container: Any, parts: int) -> None:
        run = self.run
        if not run.timed:  # outside a render: nothing to count, and nothing to keep alive
            return
        run.parts[id(container)] = parts
        run.kept.append(container)  # alive, so that its id is not reused
        self._count(container)

    def _too_many_parts(self, what: str, parts: int) -> NoReturn:
        raise OverBudget(
            "size",
            f"{what} would make a value of {parts:,} parts (the values inside it counted "
            f"as often as they appear); the limit is {self.max_bytes:,} "
            f"({settings.TEMPLATE_MAX_BYTES_ENV})",
        )

    def built(self, value: Any, what: str, parts: int | None = None) -> None:
        """Check a list, tuple or mapping the template just built (see `parts_of`);
        `parts` when the operation knows them (`[x] * 3`) without counting."""
        if parts is None:
            self.parts_of(value, what)
        elif parts > self.max_bytes:
            self._too_many_parts(what, parts)
        else:
            self._remember(value, parts)

    def produced(self, value: Any, what: str, parts: int | None = None) -> Any:
        """Check and count a value an operation built; an iterator comes back checked.
        `parts`: the parts of a container, if the operation knows them."""
        if isinstance(value, str | bytes | bytearray):
            if len(value) > self.max_bytes:
                self.too_large(what, len(value))
            self._count(value)
            if len(value) > _LARGE:  # it took a while to build: not 32 more like it
                self.check_clock()
        elif isinstance(value, _CONTAINERS):
            if len(value) > self.max_items:
                self.too_many(what, len(value))
            if id(value) not in self.run.parts:
                self.built(value, what, parts)
            if len(value) > _LARGE // 8:
                self.check_clock()
        elif isinstance(value, int):
            self.check_int_bits(value.bit_length(), what)
        elif isinstance(value, GeneratorType) or (
            type(value).__module__ == "builtins" and hasattr(type(value), "__next__")
        ):  # what `map`, `select`, `batch` (generators) or `reverse` (reversed) return
            return _CheckedIterator(value, what)
        return value

    def _count(self, value: Any) -> None:
        run = self.run
        run.work += sys.getsizeof(value)
        if run.work > run.max_work:
            raise OverBudget(
                "size",
                f"it builds more than {human_size(int(run.max_work))} of values in all "
                f"({WORK_FACTOR} x {settings.TEMPLATE_MAX_BYTES_ENV})",
            )

    def output_too_large(self) -> NoReturn:
        raise OverBudget(
            "output",
            f"it renders more than {human_size(self.max_bytes)} "
            f"({settings.TEMPLATE_MAX_BYTES_ENV})",
        )


_SMALL_TEXT = (str, int, float, bool, type(None), Undefined, range)
_CONTAINERS = (list, tuple, dict, set, frozenset)


def _items_of(container: Any) -> Iterable[Any]:
    if isinstance(container, dict):
        return [*container.keys(), *container.values()]
    return container  # type: ignore[no-any-return]


_SCALARS = frozenset({str, int, float, bool, type(None)})


def _flat(container: Any) -> bool:
    """Whether a list, tuple or dict holds only strings, numbers, booleans and nulls (the
    types are collected by `map`, in C: no step of Python's per item)."""
    return set(map(type, _items_of(container))) <= _SCALARS


def _describe(value: Any) -> str:
    """`a list of 1,000,000 items`, `a mapping of 3 keys`: what a value is, for messages."""
    if isinstance(value, Mapping):
        return f"a mapping of {len(value):,} keys"
    if isinstance(value, list | tuple | set | frozenset | MappingView):
        return f"a {type(value).__name__} of {len(value):,} items"
    return f"a value of type {type(value).__name__}"


# Outside any render (Jinja folding constants while it compiles, a test rendering a
# compiled template directly): sizes are checked, time and work are not.
_UNTIMED = Budget(_Run(Limits(), None, timed=False))

_RUN: ContextVar[_Run | None] = ContextVar("runner_template_run", default=None)
_ACTIVE: ContextVar[Budget] = ContextVar("runner_template_budget", default=_UNTIMED)


def current() -> Budget:
    """The budget of the field being rendered in this thread."""
    return _ACTIVE.get()


@contextmanager
def run_budget(
    limits: Limits | Callable[[], Limits], should_stop: Callable[[], str | None] | None = None
) -> Iterator[None]:
    """Renders inside share one clock (`limits.timeout_s` from now), one stop request and
    one count of work. Inside another run, this one changes nothing: the outer run's
    budget holds (a variable rendered while a task's field renders uses the task's time).
    `limits` may be a function, called only when a new run starts."""
    if _RUN.get() is not None:
        yield
        return
    token = _RUN.set(_Run(limits() if callable(limits) else limits, should_stop))
    try:
        yield
    finally:
        _RUN.reset(token)


@contextmanager
def field_budget() -> Iterator[Budget]:
    """The budget of one field, within the current run (or a new one with the settings)."""
    run = _RUN.get()
    if run is None:
        with run_budget(Limits.from_settings), field_budget() as budget:
            yield budget
        return
    budget = Budget(run)
    token = _ACTIVE.set(budget)
    try:
        yield budget
    finally:
        _ACTIVE.reset(token)


# --- how large a value prints -------------------------------------------------------------------


def text_size(value: Any, limit: int) -> int:
    """About how many characters `str(value)` or its JSON has; counting stops past `limit`.

    A value met twice (the same list a million times over) is counted once and its size
    reused, so counting takes one step per distinct value and per item, and ends as soon
    as any part is over `limit`. A value inside itself (a namespace holding itself) would
    print forever: it counts as more than `limit`.
    """
    leaf = _leaf_size(value)
    if leaf is not None:
        return leaf
    if isinstance(value, list | tuple) and set(map(type, value)) <= {str}:
        return 2 + 4 * len(value) + sum(map(len, value))  # quotes and separators
    sizes: dict[int, int] = {}  # id -> size of the containers counted so far
    kept: list[Any] = []  # what `sizes` is keyed by stays alive, so no id is reused
    children = _children(value)
    kept.append(children)
    # The containers being counted, outermost first: [container, its items, size so far].
    frames: list[list[Any]] = [[value, iter(children), _own_size(value)]]
    on_path = {id(value)}
    steps = 0
    while True:
        frame = frames[-1]
        child = next(frame[1], _END)
        steps += 1
        if steps % 4096 == 0:
            current().tick()
        if child is _END:
            frames.pop()
            on_path.discard(id(frame[0]))
            sizes[id(frame[0])] = frame[2]
            kept.append(frame[0])
            if not frames:
                return frame[2]  # type: ignore[no-any-return]
            size = frame[2]
            frame = frames[-1]
        else:
            size = _leaf_size(child)
            if size is None:
                size = sizes.get(id(child))
            if size is None:
                if id(child) in on_path:
                    return limit + 1
                own = _own_size(child)
                if own > limit:
                    return own
                children = _children(child)
                kept.append(children)  # a view's pairs are made afresh: keep them
                frames.append([child, iter(children), own])
                on_path.add(id(child))
                continue
        frame[2] += size
        if frame[2] > limit:
            return frame[2]  # type: ignore[no-any-return]


_END = object()


def _leaf_size(item: Any) -> int | None:
    """The printed size of a value that holds no others; None for a container."""
    if isinstance(item, str):
        return len(item) + 2
    if isinstance(item, bytes | bytearray):
        return 4 * len(item) + 3  # b'\x00'
    if isinstance(item, bool | float) or item is None:
        return 5
    if isinstance(item, int):
        return item.bit_length() * 3 // 10 + 2  # decimal digits and a sign
    if isinstance(item, Undefined):
        return 0  # printing it raises
    if isinstance(item, Mapping | Namespace | list | tuple | set | frozenset | MappingView):
        return None
    if isinstance(item, range):
        return 32
    return 80  # the repr of an object: a macro, a loop, a cycler


def _children(item: Any) -> list[Any]:
    if isinstance(item, Namespace):
        item = item._Namespace__attrs  # its attributes
    if isinstance(item, Mapping):
        return [part for pair in item.items() for part in pair]
    return list(item)


def _own_size(item: Any) -> int:
    """Brackets and separators: `{}` and `: `, `, ` for each pair; `[]` and `, `."""
    if isinstance(item, Namespace):
        return 12 + 4 * len(item._Namespace__attrs)
    if isinstance(item, Mapping):
        return 2 + 4 * len(item)
    return 2 + 2 * len(item)


# --- operators ---------------------------------------------------------------------------------


def _is_int(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_binop(budget: Budget, operator: str, left: Any, right: Any) -> int | None:
    """Refuse `left operator right` if its result would be over budget. For a list or
    tuple built, how many parts it will have (see Budget.built)."""
    what = f"'{operator}'"
    if operator == "+":
        if isinstance(left, str | bytes) and isinstance(right, str | bytes):
            budget.check_size(len(left) + len(right), what)
        elif isinstance(left, list | tuple) and isinstance(right, list | tuple):
            budget.check_items(len(left) + len(right), what)
            return budget.parts_of(left) + budget.parts_of(right) - 1
    elif operator == "*":
        for seq, times in ((left, right), (right, left)):
            if isinstance(seq, str | bytes) and _is_int(times):
                budget.check_size(len(seq) * times, what)
            elif isinstance(seq, list | tuple) and _is_int(times):
                budget.check_items(len(seq) * times, what)
                return 1 + max(int(times), 0) * (budget.parts_of(seq) - 1)
        if _is_int(left) and _is_int(right):
            budget.check_int_bits(left.bit_length() + right.bit_length(), what)
    elif operator == "**":
        if _is_int(left) and _is_int(right) and abs(left) > 1 and right > 0:
            budget.check_int_bits(math.ceil(right * math.log2(abs(left))), what)
    elif operator == "%" and isinstance(left, str | bytes):
        budget.check_size(printf_size(left, right, budget), what)
    return None


def printf_size(fmt: str | bytes, args: Any, budget: Budget) -> int:
    """An upper bound of the length of `fmt % args`, read as Python reads a %-format:
    widths and precisions (also `*` ones, taken from the arguments) and the text of each
    argument."""
    text = fmt if isinstance(fmt, str) else fmt.decode("latin-1")
    values = list(args) if isinstance(args, tuple) else [args]
    mapping = args if isinstance(args, Mapping) else None
    limit = budget.max_bytes
    total, index, pos, end = len(text), 0, 0, len(text)

    def number() -> int:
        nonlocal pos, index
        if pos < end and text[pos] == "*":
            pos += 1
            value = values[index] if index < len(values) else 0
            index += 1
            return abs(value) if _is_int(value) else 0
        start = pos
        while pos < end and text[pos].isdigit():
            pos += 1
        digits = text[start:pos]
        return int(digits) if 0 < len(digits) < 12 else (limit + 1 if digits else 0)

    while total <= limit:
        pos = text.find("%", pos)
        if pos < 0 or pos + 1 >= end:
            break
        pos += 1
        key = None
        if text[pos] == "(":
            depth, start = 0, pos
            while pos < end:
                depth += {"(": 1, ")": -1}.get(text[pos], 0)
                pos += 1
                if depth == 0:
                    break
            key = text[start + 1 : pos - 1]
        while pos < end and text[pos] in "-+ #0":
            pos += 1
        width = number()
        precision = None
        if pos < end and text[pos] == ".":
            pos += 1
            precision = number()
        while pos < end and text[pos] in "hlL":
            pos += 1
        if pos >= end:
            break
        conversion = text[pos]
        pos += 1
        if conversion == "%":
            continue
        if key is not None and mapping is not None:
            value = mapping.get(key) if key in mapping else None
        else:
            value = values[index] if index < len(values) else None
            index += 1
        if conversion in "sra":
            size = text_size(value, limit)
            if precision is not None:
                size = min(size, precision)
        elif conversion == "c":
            size = 1
        elif _is_int(value):  # octal has the most digits of %d, %o, %x
            size = max(value.bit_length() // 3 + 2, precision or 0)
        else:  # a float (or what fails as a number): its digits, its precision
            size = text_size(value, limit) + (precision or 0) + 320
        total += max(width, size)
    return total


_DIGITS = re.compile(r"\d+")


def _format_field_size(value: Any, spec: str, limit: int) -> int:
    """An upper bound of `format(value, spec)`: every number in the spec may be a width
    or a precision (fill characters can be digits too, so all count)."""
    size = text_size(value, limit) + 16
    for digits in _DIGITS.findall(spec):
        size += int(digits) if len(digits) < 12 else limit + 1
    if isinstance(value, float):
        size += 320
    elif _is_int(value):
        size += value.bit_length()  # in binary (`b`)
    return size


class _SizeChecks:
    """`str.format` and `format_map` that count what they would build, field by field."""

    _built = 0

    def vformat(self, format_string: str, args: Any, kwargs: Any) -> str:
        self._built = len(format_string)
        return super().vformat(format_string, args, kwargs)  # type: ignore[misc, no-any-return]

    def convert_field(self, value: Any, conversion: str | None) -> Any:
        if conversion is not None:
            current().check_text(value, "format() of")
        return super().convert_field(value, conversion)  # type: ignore[misc]

    def format_field(self, value: Any, format_spec: str) -> Any:
        budget = current()
        self._built += _format_field_size(value, format_spec, budget.max_bytes)
        budget.check_size(self._built, "format()")
        return super().format_field(value, format_spec)  # type: ignore[misc]


class _SizedFormatter(_SizeChecks, SandboxedFormatter):
    pass


class _SizedEscapeFormatter(_SizeChecks, SandboxedEscapeFormatter):
    pass


# --- methods -------------------------------------------------------------------------------------


def _arg(
    args: tuple[Any, ...], kwargs: Mapping[str, Any], index: int, name: str, default: Any
) -> Any:
    return args[index] if len(args) > index else kwargs.get(name, default)


def _check_method(
    budget: Budget, method: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[Any, ...]:
    """Refuse a call of a string (or bytes, or int) method whose result would be over
    budget. Returns the arguments to call it with (`join` gets its items as a list, so
    that they are counted and then joined, not read twice)."""
    owner = getattr(method, "__self__", None)
    name = getattr(method, "__name__", "")
    what = f"{name}()"
    if isinstance(owner, str | bytes | bytearray):
        length = len(owner)
        if name in ("center", "ljust", "rjust", "zfill"):
            width = _arg(args, kwargs, 0, "width", 0)
            if _is_int(width):
                budget.check_size(max(length, width), what)
        elif name == "expandtabs":
            tabsize = _arg(args, kwargs, 0, "tabsize", 8)
            if _is_int(tabsize):
                tab = "\t" if isinstance(owner, str) else b"\t"
                budget.check_size(length + owner.count(tab) * max(tabsize, 0), what)  # type: ignore[arg-type]
        elif name == "replace" and len(args) >= 2:
            old, new = args[0], args[1]
            count = _arg(args, kwargs, 2, "count", -1)
            if isinstance(old, str | bytes) and isinstance(new, str | bytes):
                occurrences = owner.count(old) if old else length + 1  # type: ignore[arg-type]
                if _is_int(count) and count >= 0:
                    occurrences = min(occurrences, count)
                budget.check_size(length + occurrences * (len(new) - len(old)), what)
        elif name == "join" and args:
            items = _items(budget, args[0], what)
            size = max(len(items) - 1, 0) * length
            for item in items:
                size += len(item) if isinstance(item, str | bytes) else 0
            budget.check_size(size, what)
            return (items, *args[1:])
        elif (
            name == "translate" and args and isinstance(owner, str) and isinstance(args[0], Mapping)
        ):
            table = args[0]
            longest = max((len(v) for v in table.values() if isinstance(v, str)), default=1)
            if length * longest > budget.max_bytes:
                counts = Counter(owner)
                size = 0
                for char, times in counts.items():
                    mapped = table.get(ord(char), char)
                    size += times * (len(mapped) if isinstance(mapped, str) else 1)
                budget.check_size(size, what)
        elif name in ("encode", "decode"):
            encoding = _arg(args, kwargs, 0, "encoding", "utf-8")
            if isinstance(encoding, str):
                try:
                    codec = codecs.lookup(encoding).name
                except LookupError:
                    codec = ""
                if codec == "punycode":  # pure Python and quadratic in the length
                    raise OverBudget(
                        "size", f"{what}: the punycode codec is not allowed in templates"
                    )
    elif _is_int(owner) and name == "to_bytes":
        size = _arg(args, kwargs, 0, "length", 1)
        if _is_int(size):
            budget.check_size(size, what)
    return args


def _items(budget: Budget, iterable: Any, what: str) -> list[Any]:
    """The items of `iterable` as a list, counted (an iterator from a filter stops itself
    at the item limit; anything else a template holds is a list of checked size)."""
    items = iterable if isinstance(iterable, list) else list(iterable)
    budget.check_items(len(items), what)
    return items


# --- iterators ---------------------------------------------------------------------------------


class _CheckedIterator:
    """An iterator that checks the clock every item and stops at the item limit: what a
    filter like `map` or `batch` returns, so that `|list` or `|join` of it is bounded."""

    __slots__ = ("_count", "_it", "_what")

    def __init__(self, iterator: Iterator[Any], what: str) -> None:
        self._it = iterator
        self._what = what
        self._count = 0

    def __iter__(self) -> _CheckedIterator:
        return self

    def __next__(self) -> Any:
        budget = current()
        budget.tick()
        item = next(self._it)
        self._count += 1
        if self._count > budget.max_items:
            budget.too_many(self._what, self._count)
        return item


# --- filters -------------------------------------------------------------------------------------

# Filters that never turn their value into text; every other filter does (`upper`,
# `string`, `urlencode`, ...), so a list or mapping given to one is checked first.
_NOT_PRINTING = frozenset(
    {
        "abs", "attr", "batch", "count", "d", "default", "dictsort", "first", "groupby",
        "items", "join", "last", "length", "list", "map", "max", "min", "random", "reject",
        "rejectattr", "reverse", "round", "select", "selectattr", "slice", "sort", "sum",
        "unique",
    }
)  # fmt: skip


# Filters that go through all of their value in one step of Python's (sorting it, making
# a list of it): a value with more items than a list may have is refused first.
_WHOLE = frozenset(
    {"dictsort", "groupby", "list", "max", "min", "sort", "sum", "unique", "batch", "slice",
     "items"}
)  # fmt: skip


def _check_center(budget: Budget, a: dict[str, Any]) -> None:
    width, value = a["width"], a["value"]
    if _is_int(width):
        budget.check_size(max(width, len(value) if isinstance(value, str) else 0), "center")


def _check_indent(budget: Budget, a: dict[str, Any]) -> None:
    width, text = a["width"], a["s"]
    if _is_int(width):
        budget.check_size(width, "indent")
        prefix = width
    else:
        prefix = len(width) if isinstance(width, str) else 0
    if isinstance(text, str):
        budget.check_size(len(text) + (text.count("\n") + 1) * prefix, "indent")


def _check_wordwrap(budget: Budget, a: dict[str, Any]) -> None:
    text, width, wrap = a["s"], a["width"], a["wrapstring"]
    if isinstance(text, str) and isinstance(wrap, str) and _is_int(width):
        lines = len(text) // max(width, 1) + text.count("\n") + 1
        budget.check_size(len(text) + lines * len(wrap), "wordwrap")


def _check_replace(budget: Budget, a: dict[str, Any]) -> None:
    text, old, new, count = a["s"], a["old"], a["new"], a["count"]
    if isinstance(text, str) and isinstance(old, str) and isinstance(new, str):
        occurrences = text.count(old) if old else len(text) + 1
        if _is_int(count) and count >= 0:
            occurrences = min(occurrences, count)
        budget.check_size(len(text) + occurrences * (len(new) - len(old)), "replace")


def _check_join(budget: Budget, a: dict[str, Any]) -> None:
    items = _items(budget, a["value"], "join")
    a["value"] = items
    separator = a["d"]
    size = max(len(items) - 1, 0) * (len(separator) if isinstance(separator, str) else 0)
    attribute = a["attribute"]
    for item in items:
        if attribute is None:
            size += len(item) if isinstance(item, str) else text_size(item, budget.max_bytes)
        else:  # the attribute's text is what is joined: count the whole item, an upper bound
            size += text_size(item, budget.max_bytes)
        if size > budget.max_bytes:
            break
    budget.check_size(size, "join")


def _check_format(budget: Budget, a: dict[str, Any]) -> None:
    value = a["value"]
    if isinstance(value, str):
        args: Any = a["kwargs"] or a["args"]
        budget.check_size(printf_size(value, args, budget), "format")


def _check_batch(budget: Budget, a: dict[str, Any]) -> None:
    if _is_int(a["linecount"]):
        budget.check_items(a["linecount"], "batch")


def _check_slice(budget: Budget, a: dict[str, Any]) -> None:
    if _is_int(a["slices"]):
        budget.check_items(a["slices"], "slice")


def _check_tojson(budget: Budget, a: dict[str, Any]) -> None:
    indent = a.get("indent")
    if (_is_int(indent) and indent > 16) or (isinstance(indent, str) and len(indent) > 16):
        raise OverBudget("size", "tojson: an indent of more than 16 is not allowed")
    budget.check_text(a["value"], "the tojson filter on")


def _check_round(budget: Budget, a: dict[str, Any]) -> None:
    # Python computes 10 ** precision to round: a precision of 10**9 never ends.
    precision = a["precision"]
    if _is_int(precision) and abs(precision) > 400:
        raise OverBudget("size", "round: a precision of more than 400 digits is not allowed")


_FILTER_CHECKS: dict[str, Callable[[Budget, dict[str, Any]], None]] = {
    "round": _check_round,
    "center": _check_center,
    "indent": _check_indent,
    "wordwrap": _check_wordwrap,
    "replace": _check_replace,
    "join": _check_join,
    "format": _check_format,
    "batch": _check_batch,
    "slice": _check_slice,
    "tojson": _check_tojson,
}


@pass_environment
def _sum(environment: Any, iterable: Iterable[Any], attribute: Any = None, start: Any = 0) -> Any:
    """Jinja's `sum`, one checked `+` at a time: Python's own adds a million lists (or huge
    numbers) in one step that no check can interrupt."""
    from jinja2.filters import make_attrgetter

    getter = make_attrgetter(environment, attribute) if attribute is not None else None
    total = start
    budget = current()
    for item in iterable:
        budget.tick()
        value = getter(item) if getter is not None else item
        parts = _check_binop(budget, "+", total, value)
        total = budget.produced(total + value, "sum", parts)
    return total


def _striptags(value: Any) -> str:
    """Markupsafe's `striptags`, checking the clock at each tag it removes: it rebuilds
    the whole text for every tag, which takes seconds for a text of many comments."""
    if hasattr(value, "__html__"):
        value = value.__html__()
    text = str(value)
    budget = current()
    for opening, closing in (("<!--", "-->"), ("<", ">")):
        while (start := text.find(opening)) != -1:
            end = text.find(closing, start)
            if end == -1:
                break
            budget.tick()
            text = f"{text[:start]}{text[end + len(closing) :]}"
    return Markup(" ".join(text.split())).unescape()


class _Wrapper(textwrap.TextWrapper):
    """A TextWrapper that checks the clock at each line it makes (it reads `width` once
    a line): breaking a long word is quadratic in its length."""

    @property
    def width(self) -> int:
        current().tick()
        return self._width

    @width.setter
    def width(self, value: int) -> None:
        self._width = value


@pass_environment
def _wordwrap(
    environment: Any,
    s: str,
    width: int = 79,
    break_long_words: bool = True,
    wrapstring: str | None = None,
    break_on_hyphens: bool = True,
) -> str:
    """Jinja's `wordwrap` (each line of `s` wrapped on its own), with `_Wrapper`."""
    if wrapstring is None:
        wrapstring = environment.newline_sequence
    wrapper = _Wrapper(
        width=width,
        expand_tabs=False,
        replace_whitespace=False,
        break_long_words=break_long_words,
        break_on_hyphens=break_on_hyphens,
    )
    return wrapstring.join(wrapstring.join(wrapper.wrap(line)) for line in s.splitlines())


class _Printer(pprint.PrettyPrinter):
    """A PrettyPrinter that checks the clock at each value it formats."""

    def format(
        self, object: Any, context: Any, maxlevels: int, level: int
    ) -> Any:  # the stdlib's names
        current().tick()
        return super().format(object, context, maxlevels, level)


def _pprint(value: Any) -> str:
    return _Printer().pformat(value)


class _CheckedFilters(dict[str, Any]):
    """The environment's filters: each one checked as it is added (also later ones)."""

    def __init__(self, filters: Mapping[str, Any]) -> None:
        super().__init__()
        for name, func in filters.items():
            self[name] = func

    def __setitem__(self, name: str, func: Any) -> None:
        super().__setitem__(name, _checked_filter(name, func))


def _checked_filter(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    """`func` with the clock checked, its arguments checked before (when the filter has
    a check, or prints its value) and its result checked after.

    The wrapper takes the context, so Jinja never calls it while compiling (it folds
    calls of plain filters on constants), and it always runs under a budget.
    """
    if getattr(func, "runner_checked", False):
        return func
    pass_arg = _PassArg.from_obj(func)
    check = _FILTER_CHECKS.get(name)
    prints = name not in _NOT_PRINTING
    signature = inspect.signature(func) if check is not None else None
    if signature is not None:
        # The context, eval context or environment comes first, but the signature of
        # Jinja's filters with an async variant is the sync one, which may lack it.
        parameters = list(signature.parameters.values())
        if parameters and parameters[0].name in ("context", "eval_ctx", "environment", "env"):
            signature = signature.replace(parameters=parameters[1:])
    what = f"the {name} filter"

    whole = name in _WHOLE

    def call(context: Context, value: Any, *args: Any, **kwargs: Any) -> Any:
        budget = current()
        budget.tick()
        if whole and hasattr(value, "__len__") and len(value) > budget.max_items:
            budget.too_many(what, len(value))
        if signature is not None and check is not None:
            bound = signature.bind(value, *args, **kwargs)
            bound.apply_defaults()
            check(budget, bound.arguments)
            args, kwargs = bound.args, bound.kwargs
        else:
            if prints:
                budget.check_text(value, f"{what} on")
            args = (value, *args)
        if pass_arg is _PassArg.context:
            args = (context, *args)
        elif pass_arg is _PassArg.eval_context:
            args = (context.eval_ctx, *args)
        elif pass_arg is _PassArg.environment:
            args = (context.environment, *args)
        return budget.produced(func(*args, **kwargs), what)

    checked = pass_context(call)
    checked.runner_checked = True  # type: ignore[attr-defined]
    checked.__name__ = getattr(func, "__name__", name)
    checked.__doc__ = func.__doc__
    return checked


# --- the code Jinja writes -------------------------------------------------------------------------


class _CodeGenerator(CodeGenerator):
    """Jinja's code generator, with the checks a template cannot get around: in every
    loop (the first statement of its body, and before its `if`), in every `~` and every
    slice (Jinja writes those as plain Python, not through the sandbox)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Loop bodies and loop tests, by identity (Jinja allows no node types of ours);
        # the values keep them alive so that an id is not reused.
        self._ticking: dict[int, Any] = {}

    def visit_For(self, node: nodes.For, frame: Frame) -> None:
        self._ticking[id(node.body)] = node.body
        if node.test is not None:
            self._ticking[id(node.test)] = node.test
        super().visit_For(node, frame)

    def blockvisit(self, nodes: Iterable[nodes.Node], frame: Frame) -> None:
        if id(nodes) in self._ticking:
            self.writeline("environment.tick()")
        super().blockvisit(nodes, frame)

    def visit(self, node: nodes.Node, *args: Any, **kwargs: Any) -> Any:
        if id(node) in self._ticking:
            self.write("(environment.tick() and ")
            super().visit(node, *args, **kwargs)
            self.write(")")
            return None
        return super().visit(node, *args, **kwargs)

    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        self.write("environment.concat_values((")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("), context.eval_ctx.autoescape)")

    def visit_List(self, node: nodes.List, frame: Frame) -> None:
        self.write("environment.built_literal(")
        super().visit_List(node, frame)
        self.write(")")

    def visit_Dict(self, node: nodes.Dict, frame: Frame) -> None:
        self.write("environment.built_literal(")
        super().visit_Dict(node, frame)
        self.write(")")

    def visit_Tuple(self, node: nodes.Tuple, frame: Frame) -> None:
        if node.ctx != "load":  # the names of `{% for a, b in ... %}`
            super().visit_Tuple(node, frame)
            return
        self.write("environment.built_literal(")
        super().visit_Tuple(node, frame)
        self.write(")")

    def visit_Getitem(self, node: nodes.Getitem, frame: Frame) -> None:
        if not isinstance(node.arg, nodes.Slice):
            super().visit_Getitem(node, frame)
            return
        self.write("environment.slice_value(")
        self.visit(node.node, frame)
        self.write(", slice(")
        for part in (node.arg.start, node.arg.stop, node.arg.step):
            if part is None:
                self.write("None")
            else:
                self.visit(part, frame)
            self.write(", ")
        self.write("))")


# --- the sandbox -----------------------------------------------------------------------------------


class LimitedSandbox(ImmutableSandboxedEnvironment):
    """Jinja's immutable sandbox, whose templates stay within the active budget."""

    code_generator_class = _CodeGenerator
    intercepted_binops = frozenset({"+", "*", "**", "%"})

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        del self.globals["lipsum"]
        filters = dict(self.filters)
        del filters["urlize"]
        # Jinja's own, but interruptible: each runs a loop of Python's for a long time.
        filters.update(sum=_sum, striptags=_striptags, wordwrap=_wordwrap, pprint=_pprint)
        self.filters = _CheckedFilters(filters)
        # Jinja joins the text of macros, blocks and `{% set %}` blocks with this.
        self.concat = self._checked_concat  # type: ignore[method-assign]

    # Called by the generated code.

    def tick(self) -> bool:
        # Budget.tick, inlined: this runs once per loop iteration.
        budget = _ACTIVE.get()
        run = budget.run
        run.countdown -= 1
        if run.countdown > 0:
            return True
        return budget.check_clock()

    def concat_values(self, values: tuple[Any, ...], autoescape: bool) -> str:
        """`a ~ b`: the text of each part counted before it is made."""
        budget = current()
        size = 0
        for value in values:
            size += len(value) if isinstance(value, str) else text_size(value, budget.max_bytes)
        budget.check_size(size, "'~'")
        return budget.produced(  # type: ignore[no-any-return]
            (markup_join if autoescape else str_join)(values), "'~'"
        )

    def slice_value(self, value: Any, index: slice) -> Any:
        return current().produced(value[index], "a slice")

    def _checked_concat(self, parts: Iterable[str]) -> str:
        budget = current()
        if isinstance(parts, list):
            size = sum(map(len, parts))
        else:
            collected: list[str] = []
            size = 0
            for part in parts:
                size += len(part)
                if size > budget.max_bytes:
                    break
                collected.append(part)
            parts = collected
        if size > budget.max_bytes:
            budget.output_too_large()
        return budget.produced("".join(parts), "a block")  # type: ignore[no-any-return]

    # The sandbox's own hooks.

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        budget = current()
        parts = _check_binop(budget, operator, left, right)
        result = super().call_binop(context, operator, left, right)
        return budget.produced(result, f"'{operator}'", parts)

    def built_literal(self, value: Any) -> Any:
        """`[a, b]`, `(a, b)`, `{'k': v}` as written in a template."""
        current().built(value, f"a {type(value).__name__}")
        return value

    def call(  # the names are Jinja's
        __self, __context: Context, __obj: Any, *args: Any, **kwargs: Any
    ) -> Any:
        budget = current()
        budget.tick()
        if isinstance(getattr(__obj, "__self__", None), Markup) and __obj.__name__ == "striptags":
            return budget.produced(_striptags(__obj.__self__), "striptags()")  # see _striptags
        args = _check_method(budget, __obj, args, kwargs)
        result = super().call(__context, __obj, *args, **kwargs)
        return budget.produced(result, f"{getattr(__obj, '__name__', 'a call')}()")

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        """Jinja's sandboxed `str.format`, with formatters that count what they build."""
        wrapper = super().wrap_str_format(value)
        if wrapper is None:
            return None
        owner = value.__self__
        formatter: SandboxedFormatter = (
            _SizedEscapeFormatter(self, escape=owner.escape)
            if isinstance(owner, Markup)
            else _SizedFormatter(self)
        )
        is_format_map = value.__name__ == "format_map"
        kind = type(owner)

        def sized(*args: Any, **kwargs: Any) -> str:
            if is_format_map:
                if kwargs or len(args) != 1:
                    return wrapper(*args, **kwargs)  # Jinja's wrapper says what is wrong
                return cast(str, kind(formatter.vformat(owner, (), args[0])))
            return cast(str, kind(formatter.vformat(owner, args, kwargs)))

        sized.__name__ = value.__name__
        return sized
