"""The Backend protocol: the only way the scheduler touches containers.

A backend translates its engine's errors into `BackendError` (or `ImageError`) with a
message for the user; the scheduler never sees an engine exception.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Protocol

from runner.execution import (
    ContainerExit,
    ContainerSpec,
    ContainerStatus,
    ImageSource,
    LogLine,
    ManagedResource,
)

ProgressCallback = Callable[[str], None]


class Backend(Protocol):
    def check(self) -> None:
        """Raise BackendError with advice if the engine cannot be reached."""

    def ensure_image(self, source: ImageSource, progress: ProgressCallback | None = None) -> str:
        """Make the image available (pull or build as needed); return the reference to run.

        Safe to call from several threads; the same source is prepared once per backend.
        """

    def create_workspace(self, name: str, labels: Mapping[str, str]) -> None:
        """Create the execution's shared volume."""

    def remove_workspace(self, name: str) -> None:
        """Remove the execution's shared volume; a missing one is not an error."""

    def start(self, spec: ContainerSpec) -> str:
        """Create the container, copy `spec.files` in, start it; return its id."""

    def logs(self, container_id: str) -> Iterator[LogLine]:
        """Yield every line the container writes until it exits and its output is drained.

        The last line is yielded even without a trailing newline.
        """

    def copy_into_workspace(self, workspace: str, image: str, archive: bytes) -> None:
        """Unpack a tar into the workspace volume, without a bind mount (works on any daemon).

        `image` is any image already available, used for a container that is never started.
        """

    def copy_out(self, container_id: str, path: str) -> Iterator[bytes] | None:
        """Stream a tar of `path` in a (stopped) container; None if the path does not exist."""

    def wait(self, container_id: str) -> ContainerExit:
        """Block until the container exits; return how it ended."""

    def stop(self, container_id: str, grace_s: float) -> None:
        """Ask a container to stop (SIGTERM), kill it after `grace_s` seconds; one that
        already ended is not an error. Returns once it has ended."""

    def kill(self, container_id: str) -> None:
        """Kill a running container; one that already ended is not an error."""

    def remove(self, container_id: str) -> None:
        """Remove a container; a missing one is not an error."""

    def cleanup(self, labels: Mapping[str, str], *, volumes: bool = True) -> int:
        """Remove every container (and volume, unless `volumes` is False) carrying all
        `labels`; return how many."""

    def find_containers(self, labels: Mapping[str, str]) -> list[ContainerStatus]:
        """Every container, running or not, carrying all `labels`."""

    def workspace_exists(self, name: str) -> bool:
        """Whether the workspace volume `name` is still there."""

    def list_managed(self) -> list[ManagedResource]:
        """Every container and volume runner created on this engine (any execution)."""

    def close(self) -> None:
        """Release connections."""
