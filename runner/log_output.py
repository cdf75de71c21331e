"""How events are rendered and written: structlog's chain, configured by `runner.logs`.

Every event is a snake_case fact with fields (`task_finished state=SUCCESS exit_code=0`).
A task's own output is the event `task_log` with `task_id`, `stream` and `line`; the console
renderer shows it as `task_id │ line`, the way `docker compose` prefixes service output.

`task_log` is the one event emitted per line of task output, so it takes a short path
(`_TaskLogShortcut`): the same event dict, the same renderer, the same write, without
structlog's generic chain around them, which cost half the CPU of a chatty task.
"""

from __future__ import annotations

import json
import logging
import sys
import zlib
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, TextIO

import structlog
import structlog.contextvars
from structlog.typing import EventDict, WrappedLogger

from runner.log_events import TASK_LOG, LogFormat

_PALETTE = (
    "\x1b[36m",
    "\x1b[33m",
    "\x1b[32m",
    "\x1b[35m",
    "\x1b[34m",
    "\x1b[96m",
    "\x1b[93m",
    "\x1b[92m",
)
_RESET = "\x1b[0m"
_RED = "\x1b[31m"
_DIM = "\x1b[2m"


class ConsoleOutput:
    """Task output as `task │ line`; other events as `HH:MM:SS event task key=value`.

    The console is for people watching a run: the execution id is printed once at the start,
    so it is left out of every line here (the JSON format keeps every field).
    """

    _HIDDEN = frozenset(
        {"event", "timestamp", "level", "execution_id", "flow_id", "task_id", "attempt"}
    )

    def __init__(self, colors: bool, task_width: int = 12) -> None:
        self.colors = colors
        self.task_width = task_width

    def __call__(self, logger: WrappedLogger, name: str, event_dict: EventDict) -> str:
        task = str(event_dict.get("task_id", ""))
        if event_dict.get("event") == TASK_LOG:
            line = str(event_dict.get("line", ""))
            bar = "!" if event_dict.get("stream") == "stderr" else "│"
            if not self.colors:
                return f"{task:<{self.task_width}} {bar} {line}"
            color = _PALETTE[zlib.crc32(task.encode()) % len(_PALETTE)]
            bar_color = _RED if bar == "!" else color
            return f"{color}{task:<{self.task_width}}{_RESET} {bar_color}{bar}{_RESET} {line}"
        stamp = str(event_dict.get("timestamp", ""))[11:19]
        event = str(event_dict.get("event", ""))
        level = str(event_dict.get("level", "info"))
        fields = " ".join(
            f"{k}={v}" for k, v in event_dict.items() if k not in self._HIDDEN and v is not None
        )
        text = f"{stamp} {event:<20} {task:<{self.task_width}} {fields}".rstrip()
        if not self.colors:
            return text if level == "info" else f"{text} [{level}]"
        tone = _RED if level in ("warning", "error", "critical") else _DIM
        return f"{tone}{text}{_RESET}"


# The keys the chain below adds to an event; a context holding one of them takes the chain
# (where the chain's own rules for the clash apply).
_CHAIN_KEYS = frozenset({"line", "event", "level", "timestamp"})
# Where structlog keeps the context variables ever bound (private; without it, no shortcut).
_CONTEXT_VARS: dict[str, Any] | None = getattr(structlog.contextvars, "_CONTEXT_VARS", None)
_encode_str = json.encoder.encode_basestring_ascii  # what json.dumps does to a str


class _TaskLogShortcut:
    """Renders `task_log` events as the configured chain would, without walking it.

    The chain is merge_contextvars, add_log_level, TimeStamper(iso, utc), renderer: for a
    `task_log` with only `line` and no context variable bound, that is the bound context,
    then `line`, `event`, `level`, `timestamp`, given to the same renderer and written by
    the same WriteLogger. The JSON text of the bound context is rendered once per bound
    logger (structlog copies the context on every bind, so it cannot change) and only the
    line and the time are encoded per event. Anything else (another chain installed, as
    by structlog's `capture_logs`; a bound context variable; a clashing key) takes the chain.
    """

    def __init__(self, processors: list[Any], renderer: Any) -> None:
        self.processors = processors  # the list structlog holds (capture_logs edits it in place)
        self.expected = list(processors)
        self.renderer = renderer
        # The default JSONRenderer (json.dumps, default settings) is rendered piecewise.
        self.json = (
            isinstance(renderer, structlog.processors.JSONRenderer)
            and renderer._dumps is json.dumps
            and set(renderer._dumps_kw) == {"default"}
        )

    def render(self, logger: Any, line: Any) -> str | None:
        """The text the chain would write for this event, or None to take the chain."""
        prefix = self._usable_prefix(logger)
        if prefix is None:
            return None
        if self.json and type(line) is str:
            stamp = datetime.now(tz=UTC).isoformat().replace("+00:00", "Z")
            return (
                f'{prefix}"line": {_encode_str(line)}, "event": "task_log", '
                f'"level": "info", "timestamp": "{stamp}"}}'
            )
        event = {**logger._context, "line": line, "event": TASK_LOG, "level": "info"}
        if not isinstance(self.renderer, ConsoleOutput):  # the console never shows the time
            event["timestamp"] = datetime.now(tz=UTC).isoformat().replace("+00:00", "Z")
        text = self.renderer(logger._logger, "info", event)
        return text if isinstance(text, str) else None

    def render_lines(self, logger: Any, lines: Sequence[str]) -> str | None:
        """The text the chain would write for one event per line, all with one time (the
        lines of a batch arrived together), or None to take the chain line by line."""
        prefix = self._usable_prefix(logger)
        if prefix is None:
            return None
        if self.json:
            stamp = datetime.now(tz=UTC).isoformat().replace("+00:00", "Z")
            head = f'\n{prefix}"line": '
            tail = f', "event": "task_log", "level": "info", "timestamp": "{stamp}"}}'
            return "".join([f"{head}{_encode_str(line)}{tail}" for line in lines])[1:]
        if isinstance(self.renderer, ConsoleOutput):
            # ConsoleOutput writes a task line as a head that depends on the task and stream
            # only, then the line: render the head once.
            event = {**logger._context, "line": "", "event": TASK_LOG, "level": "info"}
            head = "\n" + self.renderer(logger._logger, "info", event)
            return "".join([f"{head}{line}" for line in lines])[1:]
        return None

    def _usable_prefix(self, logger: Any) -> str | None:
        """This logger's cached prefix (see `_prefix`), or None when its events must take
        the chain."""
        if logger._processors is not self.processors or self.processors != self.expected:
            return None
        if _context_vars_bound():
            return None
        prefix = logger.__dict__.get("_task_log_prefix")
        if prefix is None:
            prefix = logger._task_log_prefix = self._prefix(logger)
        return prefix or None

    def _prefix(self, logger: Any) -> str:
        """The JSON of the bound context up to where `line` goes ("-" when not JSON), or ""
        when this logger's events must take the chain."""
        context = logger._context
        if not _CHAIN_KEYS.isdisjoint(context):
            return ""
        if not self.json:
            return "-"
        text = self.renderer(logger._logger, "info", dict(context))
        if not isinstance(text, str) or not text.endswith("}"):
            return ""
        return text[:-1] + (", " if context else "")


def _context_vars_bound() -> bool:
    if _CONTEXT_VARS is None:
        return True
    return any(var.get(Ellipsis) is not Ellipsis for var in _CONTEXT_VARS.values())


_shortcut: _TaskLogShortcut | None = None
_task_output = True  # False: task_log events are dropped (a server keeps lines in the store)

_FilteringLogger: Any = structlog.make_filtering_bound_logger(0)
_QuietLogger: Any = structlog.make_filtering_bound_logger(logging.WARNING)


class _BoundLogger(_FilteringLogger):  # type: ignore[misc]  # a class made at run time
    """structlog's filtering bound logger, with `task_log` events on the short path."""

    def info(self, event: str, *args: Any, **kw: Any) -> Any:
        if event == TASK_LOG and not _task_output:
            return None
        shortcut = _shortcut
        if event == TASK_LOG and shortcut is not None and not args and kw.keys() == {"line"}:
            text = shortcut.render(self, kw["line"])
            if text is not None:
                self._logger.msg(text)
                return None
        return super().info(event, *args, **kw)


def echo_task_lines(logger: Any, lines: Sequence[str]) -> None:
    """Log each of `lines` as a `task_log` event of `logger` (bound to a task and stream),
    as `logger.info(TASK_LOG, line=...)` would, written at once with one time.

    The lines of a batch cost one write and one timestamp; the console head or the JSON of
    the bound context is rendered once per batch, the line alone per line.
    """
    if not _task_output or not lines or isinstance(logger, _QuietLogger):
        return  # not shown (a server), or info events filtered out (quiet)
    shortcut = _shortcut
    text = (
        shortcut.render_lines(logger, lines)
        if shortcut is not None and isinstance(logger, _BoundLogger)
        else None
    )
    if text is None:  # another chain (capture_logs), a context variable: event by event
        for line in lines:
            logger.info(TASK_LOG, line=line)
        return
    logger._logger.msg(text)


def configure(
    fmt: LogFormat = "console",
    *,
    stream: TextIO | None = None,
    colors: bool | None = None,
    task_width: int = 12,
    quiet: bool = False,
    task_output: bool = True,
) -> None:
    """Configure structlog now, as `runner.logs.configure` describes."""
    global _shortcut, _task_output
    _task_output = task_output
    out = stream if stream is not None else sys.stderr
    renderer: Any
    if fmt == "json":
        renderer = structlog.processors.JSONRenderer()
    else:
        use_colors = out.isatty() if colors is None else colors
        renderer = ConsoleOutput(colors=use_colors, task_width=task_width)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            renderer,
        ],
        logger_factory=structlog.WriteLoggerFactory(file=out),
        wrapper_class=_QuietLogger if quiet else _BoundLogger,
        cache_logger_on_first_use=False,
    )
    _shortcut = _TaskLogShortcut(structlog.get_config()["processors"], renderer)
