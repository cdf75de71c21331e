"""structlog, configured once: coloured console lines for people, JSON lines for machines.

Every event is a snake_case fact with fields (`task_finished state=SUCCESS exit_code=0`).
A task's own output is the event `task_log` with `task_id`, `stream` and `line`; the console
renderer shows it as `task_id │ line`, the way `docker compose` prefixes service output.

This module is the door, and imports nothing heavy: structlog (with rich and pygments
behind it) costs a fifth of a second, which `runner validate` and `--help` never need.
`configure` records the choice; the first logger asked for applies it
(`runner.log_output` holds the renderers and the short path for task lines).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any, TextIO

from runner.log_events import TASK_LOG, LogFormat

__all__ = ["TASK_LOG", "LogFormat", "configure", "echo_task_lines", "get_logger", "module_logger"]

_wanted: dict[str, Any] | None = None  # what `configure` was last asked for
_applied = False  # whether structlog has been configured with it


def configure(
    fmt: LogFormat = "console",
    *,
    stream: TextIO | None = None,
    colors: bool | None = None,
    task_width: int = 12,
    quiet: bool = False,
    task_output: bool = True,
) -> None:
    """Set up structlog for this process. Safe to call again (tests, several runs).

    `quiet` shows warnings and errors only (commands that merely read the database, but
    may recover an orphaned execution on the way). Without `task_output` the lines tasks
    print are not logged (a server: they are in the store, and its log is about itself).

    Applied now if structlog is in use already, else when the first logger is asked for.
    """
    global _wanted, _applied
    _wanted = {
        "fmt": fmt,
        "stream": stream if stream is not None else sys.stderr,
        "colors": colors,
        "task_width": task_width,
        "quiet": quiet,
        "task_output": task_output,
    }
    _applied = False
    if "structlog" in sys.modules:
        _apply()


def _apply() -> None:
    global _applied
    if _wanted is not None and not _applied:
        from runner import log_output

        log_output.configure(**_wanted)
        _applied = True


def get_logger(**fields: Any) -> Any:
    """A structlog logger bound to `fields`; the first one applies `configure`'s choice
    (without a `configure`, structlog is left as the embedding program set it up)."""
    _apply()
    import structlog

    return structlog.get_logger("runner").bind(**fields)


def module_logger(name: str) -> Any:
    """A logger for a module's own events, for module level: structlog is imported at its
    first event, not with the module, and resolved on each use (so a later `configure`,
    or structlog's `capture_logs` in a test, applies to it)."""
    return _ModuleLogger(name)


class _ModuleLogger:
    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, method: str) -> Any:
        _apply()
        import structlog

        return getattr(structlog.get_logger(self._name), method)


def echo_task_lines(logger: Any, lines: Sequence[str]) -> None:
    """Log each of `lines` as a `task_log` event of `logger` (bound to a task and stream),
    as `logger.info(TASK_LOG, line=...)` would, written at once with one time."""
    from runner import log_output

    log_output.echo_task_lines(logger, lines)
