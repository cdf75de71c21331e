"""runner: a Docker-native container task runner.

    from runner import load_flow, run_flow
    result = run_flow("flows/hello.yml")

Everything here is imported on first use (PEP 562): `import runner` stays cheap, so that
`runner --help` does not pay for pydantic, Jinja, SQLAlchemy or the engine's SDK.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from runner.api import load_flow, open_store, run_flow, submit
    from runner.errors import RunnerError
    from runner.execution import ExecutionResult, ExecutionState, TaskState
    from runner.flow import Flow, Task

_EXPORTS = {
    "ExecutionResult": "runner.execution",
    "ExecutionState": "runner.execution",
    "Flow": "runner.flow",
    "RunnerError": "runner.errors",
    "Task": "runner.flow",
    "TaskState": "runner.execution",
    "load_flow": "runner.api",
    "open_store": "runner.api",
    "run_flow": "runner.api",
    "submit": "runner.api",
}

__all__ = [
    "ExecutionResult",
    "ExecutionState",
    "Flow",
    "RunnerError",
    "Task",
    "TaskState",
    "load_flow",
    "open_store",
    "run_flow",
    "submit",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'runner' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
