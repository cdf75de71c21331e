"""A scripted in-memory backend for unit tests of the scheduler: no engine needed.

Each task's behaviour is looked up by its RUNNER_TASK_ID: the lines it prints, its exit
code and how long it "runs". Real container behaviour is tested against a real engine in
tests/integration; this double only exercises ordering, skipping and concurrency.
"""

from __future__ import annotations

import io
import tarfile
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from runner.backends.base import EngineInfo, ProgressCallback
from runner.errors import BackendError
from runner.execution import (
    LABEL_EXECUTION,
    ContainerExit,
    ContainerSpec,
    ContainerStatus,
    ImageSource,
    LogLine,
    ManagedResource,
    PullImage,
)

_WS_PREFIX = "fake-ws-"


@dataclass(frozen=True)
class Script:
    lines: tuple[str, ...] = ()
    exit_code: int = 0
    seconds: float = 0.0
    exit_codes: tuple[int, ...] = ()  # per attempt (RUNNER_ATTEMPT); then `exit_code`


@dataclass
class _Container:
    spec: ContainerSpec
    script: Script
    started: float
    killed: threading.Event = field(default_factory=threading.Event)


class FakeBackend:
    """`keep_history=False` keeps no list of started specs and forgets a container once
    it is removed: for runs of thousands of tasks (bench/scaling.py), whose memory would
    otherwise be mostly this double's record of them."""

    def __init__(
        self, scripts: Mapping[str, Script] | None = None, *, keep_history: bool = True
    ) -> None:
        self.scripts = dict(scripts or {})
        self.keep_history = keep_history
        self._count = 0
        self.started: list[ContainerSpec] = []
        self.volumes: set[str] = set()
        self.removed: list[str] = []
        self.stopped: list[str] = []
        self.killed: list[str] = []
        self.seeded: list[tuple[str, bytes]] = []
        self.workspace_files: dict[str, dict[str, bytes]] = {}
        self._containers: dict[str, _Container] = {}
        self._lock = threading.Lock()
        self.max_running = 0
        self._running = 0
        self.node: str | None = None

    def check(self) -> None:
        pass

    def ensure_image(self, source: ImageSource, progress: ProgressCallback | None = None) -> str:
        return source.reference if isinstance(source, PullImage) else f"built:{source.context.name}"

    def describe(self) -> EngineInfo:
        return EngineInfo(
            backend="fake", name="fake engine", version="0", os="memory", address="memory://"
        )

    def workspace(self, execution_id: str, labels: Mapping[str, str]) -> FakeWorkspace:
        return FakeWorkspace(self, f"{_WS_PREFIX}{execution_id}")

    def start(self, spec: ContainerSpec) -> str:
        script = self.scripts.get(spec.env["RUNNER_TASK_ID"], Script())
        if script.exit_code < 0:
            raise BackendError(f"cannot start {spec.name}: scripted failure")
        with self._lock:
            container_id = f"c{self._count:04d}"
            self._count += 1
            if self.keep_history:
                self.started.append(spec)
            self._containers[container_id] = _Container(spec, script, time.monotonic())
            self._running += 1
            self.max_running = max(self.max_running, self._running)
        return container_id

    def logs(self, container_id: str) -> Iterator[LogLine]:
        container = self._containers[container_id]
        for line in container.script.lines:
            yield LogLine(stream="stdout", line=line, time=datetime.now(UTC))
        container.killed.wait(container.script.seconds)

    def wait(self, container_id: str) -> ContainerExit:
        container = self._containers[container_id]
        with self._lock:
            self._running -= 1
        attempt = int(container.spec.env.get("RUNNER_ATTEMPT", "1"))
        codes = container.script.exit_codes
        exit_code = codes[attempt - 1] if attempt <= len(codes) else container.script.exit_code
        return ContainerExit(exit_code=137 if container.killed.is_set() else exit_code)

    def stop(self, container_id: str, grace_s: float) -> None:
        self.stopped.append(container_id)
        self._containers[container_id].killed.set()

    def kill(self, container_id: str) -> None:
        self.killed.append(container_id)
        self._containers[container_id].killed.set()

    def node_of(self, container_id: str) -> str | None:
        """`self.node`: None, as one engine; a name to play a backend of several machines."""
        return self.node

    def remove(self, container_id: str) -> None:
        if self.keep_history:
            self.removed.append(container_id)
        else:
            with self._lock:
                self._containers.pop(container_id, None)

    def cleanup(self, labels: Mapping[str, str], *, volumes: bool = True) -> int:
        return 0

    def find_containers(self, labels: Mapping[str, str]) -> list[ContainerStatus]:
        return [
            ContainerStatus(id=cid, running=not c.killed.is_set(), labels=c.spec.labels)
            for cid, c in self._containers.items()
            if cid not in self.removed and all(c.spec.labels.get(k) == v for k, v in labels.items())
        ]

    def list_managed(self) -> list[ManagedResource]:
        found = [
            ManagedResource(
                kind="container",
                name=cid,
                execution_id=c.spec.labels.get(LABEL_EXECUTION, ""),
                running=not c.killed.is_set(),
            )
            for cid, c in self._containers.items()
            if cid not in self.removed
        ]
        found += [
            ManagedResource(kind="volume", name=name, execution_id=name.removeprefix(_WS_PREFIX))
            for name in sorted(self.volumes)
        ]
        return found

    def remove_managed(self, resource: ManagedResource) -> None:
        if resource.kind == "container":
            self.remove(resource.name)
        else:
            self.volumes.discard(resource.name)

    def close(self) -> None:
        pass


class FakeWorkspace:
    """A workspace that exists as a name in `FakeBackend.volumes`; `files` (path relative
    to the workspace root -> content) is what `read` packs, as tasks would have written."""

    def __init__(self, backend: FakeBackend, name: str) -> None:
        self._backend = backend
        self.name = name

    @property
    def files(self) -> dict[str, bytes]:
        return self._backend.workspace_files.setdefault(self.name, {})

    def create(self) -> None:
        self._backend.volumes.add(self.name)

    def exists(self) -> bool:
        return self.name in self._backend.volumes

    def seed(self, archive: bytes) -> None:
        self._backend.seeded.append((self.name, archive))

    def read(self, path: str) -> Iterator[bytes] | None:
        prefix = path.strip("/")
        top = prefix.rsplit("/", 1)[-1] if prefix else "workspace"
        chosen = {
            name: content
            for name, content in self.files.items()
            if not prefix or name == prefix or name.startswith(prefix + "/")
        }
        if not chosen:
            return None
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as archive:
            for name, content in sorted(chosen.items()):
                inside = name[len(prefix) :].lstrip("/") if prefix else name
                entry = tarfile.TarInfo(f"{top}/{inside}" if inside else top)
                entry.size = len(content)
                archive.addfile(entry, io.BytesIO(content))
        return iter([buffer.getvalue()])

    def remove(self) -> None:
        self._backend.volumes.discard(self.name)
