"""structlog, configured once: coloured console lines for people, JSON lines for machines.

Every event is a snake_case fact with fields (`task_finished state=SUCCESS exit_code=0`).
A task's own output is the event `task_log` with `task_id`, `stream` and `line`; the console
renderer shows it as `task_id │ line`, the way `docker compose` prefixes service output.
"""

from __future__ import annotations

import sys
import zlib
from typing import Any, Literal, TextIO

import structlog
from structlog.typing import EventDict, WrappedLogger

LogFormat = Literal["console", "json"]

TASK_LOG = "task_log"

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


class ConsoleOutput:
    """Task output as `task │ line`; every other event through structlog's ConsoleRenderer."""

    def __init__(self, colors: bool, task_width: int = 12) -> None:
        self.colors = colors
        self.task_width = task_width
        self._events = structlog.dev.ConsoleRenderer(colors=colors, pad_event_to=24)

    def __call__(self, logger: WrappedLogger, name: str, event_dict: EventDict) -> str:
        if event_dict.get("event") != TASK_LOG:
            return str(self._events(logger, name, event_dict))
        task = str(event_dict.get("task_id", "?"))
        line = str(event_dict.get("line", ""))
        bar = "!" if event_dict.get("stream") == "stderr" else "│"
        if not self.colors:
            return f"{task:<{self.task_width}} {bar} {line}"
        color = _PALETTE[zlib.crc32(task.encode()) % len(_PALETTE)]
        bar_color = _RED if bar == "!" else color
        return f"{color}{task:<{self.task_width}}{_RESET} {bar_color}{bar}{_RESET} {line}"


def configure(
    fmt: LogFormat = "console",
    *,
    stream: TextIO | None = None,
    colors: bool | None = None,
    task_width: int = 12,
) -> None:
    """Set up structlog for this process. Safe to call again (tests, several runs)."""
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
        wrapper_class=structlog.make_filtering_bound_logger(0),
        cache_logger_on_first_use=False,
    )


def get_logger(**fields: Any) -> Any:
    return structlog.get_logger("runner").bind(**fields)
