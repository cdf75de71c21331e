"""Backend-neutral values passed between the scheduler, a backend and the store.

Nothing here knows Docker: a Kubernetes or Swarm backend takes the same `ContainerSpec`
and gives back the same `LogLine`s (or `LogBatch`es) and `ContainerExit`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal


class ExecutionState(StrEnum):
    CREATED = "CREATED"
    QUEUED = "QUEUED"  # waiting for a slot of the flow's `concurrency.limit`
    RUNNING = "RUNNING"
    SUCCESS = "SUCCESS"
    FAILED = "FAILED"
    KILLED = "KILLED"
    WARNING = "WARNING"  # a task failed, but it had `allow_failure: true`
    CANCELLED = "CANCELLED"  # never ran: the flow's concurrency limit said `cancel`
    PAUSED = "PAUSED"  # a pause task waits to be resumed: no process, container or thread

    @property
    def is_final(self) -> bool:
        return self not in (
            ExecutionState.CREATED,
            ExecutionState.QUEUED,
            ExecutionState.RUNNING,
            ExecutionState.PAUSED,
        )


class TaskState(StrEnum):
    CREATED = "CREATED"
    RUNNING = "RUNNING"
    SUCCESS = "SUCCESS"
    FAILED = "FAILED"
    SKIPPED = "SKIPPED"
    KILLED = "KILLED"
    RETRYING = "RETRYING"  # this attempt failed and another one follows
    PAUSED = "PAUSED"  # a pause task, waiting to be resumed

    @property
    def is_final(self) -> bool:
        return self not in (TaskState.CREATED, TaskState.RUNNING, TaskState.PAUSED)


Stream = Literal["stdout", "stderr"]


@dataclass(frozen=True, slots=True)
class LogLine:
    """One line a container wrote, without its line ending."""

    stream: Stream
    line: str
    time: datetime


@dataclass(frozen=True, slots=True)
class LogBatch:
    """Consecutive lines of one stream of a container, in order, without their line
    endings, sharing one time (that of the first; the Docker backend groups the lines
    the engine stamped within the same 10 ms).

    The unit the log path works in: a chatty task writes thousands of lines a second,
    and masking, echoing and storing them a batch at a time costs a fraction of doing it
    line by line (`bench/overhead.py`, rows `logs`).
    """

    stream: Stream
    time: datetime
    lines: tuple[str, ...]


def batch_lines(lines: Iterable[LogLine]) -> Iterator[LogBatch]:
    """Each line as a batch of its own, as soon as it is read: how a backend that reads
    line by line offers `Backend.log_batches`. Lines are not held to be grouped: the next
    line of a live task may be minutes away, and the one read must be stored (and shown)
    now."""
    for line in lines:
        yield LogBatch(line.stream, line.time, (line.line,))


def unbatch_lines(batches: Iterable[LogBatch]) -> Iterator[LogLine]:
    """The lines of batches one by one, each with its batch's time."""
    for batch in batches:
        stream, time = batch.stream, batch.time
        for text in batch.lines:
            yield LogLine(stream, text, time)


@dataclass(frozen=True)
class PullImage:
    """Use an image by reference, pulling it according to `policy` (missing|always|never)."""

    reference: str
    policy: str = "missing"


@dataclass(frozen=True)
class BuildImage:
    """Build an image from a folder with a Dockerfile on the runner's machine."""

    context: Path


ImageSource = PullImage | BuildImage


@dataclass(frozen=True)
class Mount:
    """A volume in the container: a named volume, or a path on the daemon's host (bind)."""

    kind: Literal["volume", "bind"]
    source: str
    target: str
    read_only: bool = False
    written: str = ""  # as the flow wrote it (`./data:/data`), for messages


@dataclass(frozen=True)
class FileToCopy:
    """A file delivered into the container before it starts (never a bind mount)."""

    path: str  # absolute path in the container
    content: bytes
    mode: int = 0o755


@dataclass(frozen=True)
class ContainerSpec:
    """Everything a backend needs to run one task attempt."""

    name: str
    image: str  # a resolved image reference or id, as returned by Backend.ensure_image
    command: tuple[str, ...] | None
    env: Mapping[str, str]
    labels: Mapping[str, str]
    workspace: str | None  # the execution's workspace (Workspace.name) at WORKSPACE_PATH;
    # None: the task has `workspace: false` (no workspace; may run on any node)
    mounts: tuple[Mount, ...] = ()
    files: tuple[FileToCopy, ...] = ()
    working_dir: str = "/workspace"
    user: str | None = None
    network: str | None = None  # bridge, host, none, or a user network; None = engine default
    cpus: float | None = None  # CPU time, in CPUs (1.5 = one and a half)
    memory_bytes: int | None = None  # hard limit, swap included


@dataclass(frozen=True)
class ContainerExit:
    """How a container ended."""

    exit_code: int
    oom_killed: bool = False
    error: str | None = None  # the engine's own error, if any
    started_at: datetime | None = None
    finished_at: datetime | None = None


@dataclass(frozen=True)
class ContainerStatus:
    """A container as the engine sees it now (for recovering an orphaned execution)."""

    id: str
    running: bool
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ManagedResource:
    """A container or a workspace (a volume, for Docker) runner created, found by its
    labels (for `runner gc`)."""

    kind: Literal["container", "volume"]
    name: str  # a container id, or the workspace's name
    execution_id: str
    running: bool = False


@dataclass(frozen=True)
class TaskResult:
    """The outcome of one task attempt, as the scheduler records it."""

    task_id: str
    attempt: int
    state: TaskState
    exit_code: int | None = None
    error: str | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None
    container_id: str | None = None
    outputs: Mapping[str, Any] = field(default_factory=dict)
    node: str | None = None  # the machine it ran on (Swarm), None for one engine


@dataclass(frozen=True)
class ExecutionResult:
    execution_id: str
    flow_id: str
    state: ExecutionState
    tasks: tuple[TaskResult, ...] = field(default_factory=tuple)

    @property
    def ok(self) -> bool:
        """SUCCESS, or WARNING: only tasks allowed to fail failed."""
        return self.state in (ExecutionState.SUCCESS, ExecutionState.WARNING)


WORKSPACE_PATH = "/workspace"

LABEL_PREFIX = "io.runner."
LABEL_MANAGED = LABEL_PREFIX + "managed"
LABEL_EXECUTION = LABEL_PREFIX + "execution"
LABEL_FLOW = LABEL_PREFIX + "flow"
LABEL_TASK_RUN = LABEL_PREFIX + "task-run"  # the task run's id in the store: one per attempt
LABEL_ATTEMPT = LABEL_PREFIX + "attempt"
