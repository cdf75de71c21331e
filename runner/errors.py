"""The exceptions `runner` raises, each with a message written for the user.

RunnerError                 anything runner reports instead of a traceback
├── UsageError              a bad flag or argument (exit 2)
├── FlowError               a flow file that cannot be used; carries every Problem (exit 2)
├── InputError              input values that do not fit the flow's inputs (exit 2)
├── PolicyError             host access or environment the operator has not allowed (exit 2)
├── CycleError              tasks that depend on each other in a loop
├── BackendError            the container engine failed or refused (exit 1)
│   ├── ImageError          an image could not be pulled, found or built
│   └── HostPathError       a bind source the engine cannot see (see runner/hostpaths.py)
├── StoreError              the database could not be opened or written
└── NotFoundError           an execution id that matches nothing (exit 2)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


class RunnerError(Exception):
    """Base of every error runner reports to the user."""

    exit_code = 1


class UsageError(RunnerError):
    exit_code = 2


Loc = tuple[str | int, ...]
"""Where a value is in a flow file: the keys and indexes from the top (`("tasks", 0, "id")`)."""


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a flow file: where it is and what is wrong."""

    file: str
    line: int | None
    column: int | None
    field: str
    message: str

    def __str__(self) -> str:
        where = self.file
        if self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        return (
            f"{where}: {self.field}: {self.message}" if self.field else f"{where}: {self.message}"
        )


class FlowError(RunnerError):
    """A flow file that cannot be used. `problems` lists all of them at once."""

    exit_code = 2

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = tuple(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


class InputError(RunnerError):
    exit_code = 2


class PolicyError(RunnerError):
    """A flow asks for what the operator has not allowed: a host path, the Docker socket,
    the host's network, a variable of the runner's environment. The message names the
    setting that would allow it (see `runner.policy`)."""

    exit_code = 2


class CycleError(RunnerError):
    exit_code = 2

    def __init__(self, cycle: Sequence[str]) -> None:
        self.cycle = tuple(cycle)
        super().__init__("cycle: " + " -> ".join(self.cycle))


class BackendError(RunnerError):
    exit_code = 1


class ImageError(BackendError):
    pass


class StoreError(RunnerError):
    exit_code = 1


class NotFoundError(RunnerError):
    exit_code = 2


class HostPathError(BackendError):
    """A bind mount's source has no path the engine can use: a Windows path on a Linux
    engine, a WSL or network path Docker Desktop cannot mount, or a folder inside the
    runner's own container that has no host equivalent."""
