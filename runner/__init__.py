"""runner: a Docker-native container task runner.

from runner import load_flow, run_flow
result = run_flow("flows/hello.yml")
"""

from runner.api import load_flow, open_store, run_flow
from runner.errors import RunnerError
from runner.execution import ExecutionResult, ExecutionState, TaskState
from runner.flow import Flow, Task

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
]
