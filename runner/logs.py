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
