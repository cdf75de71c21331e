"""The Backend protocol: the only way the scheduler touches containers.

A backend runs each task attempt as a container somewhere (a Docker engine, a Swarm, a
Kubernetes cluster) and owns the execution's workspace: the folder every task of the
execution sees at /workspace, wherever the backend keeps it. The scheduler asks for a
`Workspace` handle and never learns whether it is a named volume, a volume on one node
of a swarm, or a persistent volume claim.

A backend translates its engine's errors into `BackendError` (or `ImageError`) with a
message for the user; the scheduler never sees an engine exception. Labels it is given
are already backend-neutral: keys under `io.runner.`, values of at most 63 characters of
`[A-Za-z0-9._-]` (see `runner.specs.label_value`), which Docker, Swarm and Kubernetes
all accept.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Protocol

from runner.execution import (
    ContainerExit,
    ContainerSpec,
    ContainerStatus,
    ImageSource,
    LogBatch,
    LogLine,
    ManagedResource,
    batch_lines,
)

ProgressCallback = Callable[[str], None]


@dataclass(frozen=True)
class NodeInfo:
    """One machine of a multi-host backend (a Swarm node), as `runner info` shows it."""

    name: str  # its hostname, as task runs record it
    id: str
    role: str  # "manager" or "worker"
    state: str  # the cluster's view: "ready", "down", "disconnected", ...
    availability: str  # "active", "pause" or "drain"
    address: str
    task_runs: int  # runner's task runs (and helper tasks) placed there and not ended


@dataclass(frozen=True)
class EngineInfo:
    """What `runner info` says about the engine a backend drives."""

    backend: str  # the registry name: "docker"
    name: str  # the engine's own name: "Docker Engine", "Docker Desktop"
    version: str
    os: str  # the engine host's operating system
    address: str  # where it is reached, as the user would write DOCKER_HOST
    chosen_by: str = ""  # why this engine: "DOCKER_HOST is set", "the current context of ..."
    nodes: tuple[NodeInfo, ...] = ()  # a multi-host backend's machines; () for one engine


class Workspace(Protocol):
    """The storage an execution's tasks share, mounted at /workspace in each of them.

    Created before the first task, seeded with the flow's `files:` and file inputs, read
    for `artifacts:` after a task ends (the task's container may be gone by then: a
    finished pod or swarm task cannot be read), removed at the end unless it is kept.
    """

    @property
    def name(self) -> str:
        """How the backend names it (for messages and `ContainerSpec.workspace`)."""

    def create(self) -> None:
        """Create it, empty; creating one that exists is not an error."""

    def exists(self) -> bool:
        """Whether it is still there (a restart reuses a kept workspace)."""

    def seed(self, archive: bytes) -> None:
        """Unpack a tar whose paths are relative to the workspace root into it."""

    def read(self, path: str) -> Iterator[bytes] | None:
        """A tar stream of the file or folder `path` (relative to the workspace root;
        "" for the root itself), None if it does not exist. Entry names start with the
        path's last component, as `docker cp` and `tar -C PARENT NAME` write them; the
        root's entries start with `workspace/`. Works after every task has ended."""

    def remove(self) -> None:
        """Remove it and its content; a missing one is not an error."""


class Backend(Protocol):
    def check(self) -> None:
        """Raise BackendError with advice if the engine cannot be reached."""

    def describe(self) -> EngineInfo:
        """The engine's name, version and OS (raises BackendError if unreachable)."""

    def ensure_image(self, source: ImageSource, progress: ProgressCallback | None = None) -> str:
        """Make the image available (pull or build as needed); return the reference to run.

        Safe to call from several threads; the same source is prepared once per backend.
        """

    def workspace(self, execution_id: str, labels: Mapping[str, str]) -> Workspace:
        """The handle of an execution's workspace (nothing is created until `create`).
        `labels` mark what the backend creates for it, for `cleanup` and `list_managed`."""

    def start(self, spec: ContainerSpec) -> str:
        """Create the container, copy `spec.files` in, start it; return its id. The
        workspace `spec.workspace` is mounted at /workspace (none when it is None: the
        task said `workspace: false`, and a multi-host backend may then place it anywhere)."""

    def logs(self, container_id: str) -> Iterator[LogLine]:
        """Yield every line the container writes until it exits and its output is drained.

        The last line is yielded even without a trailing newline. (A backend may also
        offer `log_batches(container_id) -> Iterator[LogBatch]`, the same lines in
        batches, read in bulk: see `log_batches` below, which the attempts call.)
        """

    def wait(self, container_id: str) -> ContainerExit:
        """Block until the container exits; return how it ended."""

    def stop(self, container_id: str, grace_s: float) -> None:
        """Ask a container to stop (SIGTERM), kill it after `grace_s` seconds; one that
        already ended is not an error. Returns once it has ended."""

    def kill(self, container_id: str) -> None:
        """Kill a running container; one that already ended is not an error."""

    def node_of(self, container_id: str) -> str | None:
        """The name of the machine the container was placed on (a Swarm node's hostname),
        None for a backend of one engine or a container not placed yet. Asked once the
        attempt has ended, before `remove`."""

    def remove(self, container_id: str) -> None:
        """Remove a container; a missing one is not an error."""

    def cleanup(self, labels: Mapping[str, str], *, volumes: bool = True) -> int:
        """Remove every container (and workspace, unless `volumes` is False) carrying all
        `labels`; return how many."""

    def find_containers(self, labels: Mapping[str, str]) -> list[ContainerStatus]:
        """Every container, running or not, carrying all `labels`."""

    def list_managed(self) -> list[ManagedResource]:
        """Every container and workspace runner created on this engine (any execution)."""

    def remove_managed(self, resource: ManagedResource) -> None:
        """Remove one of what `list_managed` found; a missing one is not an error."""

    def close(self) -> None:
        """Release connections."""


def log_batches(backend: Backend, container_id: str) -> Iterator[LogBatch]:
    """The lines of a container in batches (`Backend.logs` otherwise): the backend's own
    `log_batches` when it has one (the Docker backend splits whole reads of the engine's
    stream at once), else its lines grouped by stream and time."""
    own: Callable[[str], Iterator[LogBatch]] | None = getattr(backend, "log_batches", None)
    if own is not None:
        return own(container_id)
    return batch_lines(backend.logs(container_id))
