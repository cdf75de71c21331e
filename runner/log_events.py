"""What the logging door (`runner.logs`) and its renderers (`runner.log_output`) share:
the output formats and the name of the event a task's output line becomes."""

from __future__ import annotations

from typing import Literal

LogFormat = Literal["console", "json"]

TASK_LOG = "task_log"
"""The one event emitted per line of task output (fields `task_id`, `stream`, `line`)."""
