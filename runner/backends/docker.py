"""The Docker backend: runs each task attempt as a container on a Docker engine.

This is the only module of runner that imports `docker`. Every docker-py, requests,
urllib3 and socket error is translated here, most specific first, into

    BackendError        the engine cannot be reached, refused a request, or its disk is full
    └── ImageError      an image could not be pulled, found or built

with a message that names the thing and says what to do. Per-task calls use the
low-level `APIClient` so that a task costs the round trips it needs and no more: create,
put_archive (only with files or a non-root user), start, logs (a follow, then one short
fetch of what the follow may have missed), wait (plus an inspect after exit code 137),
remove. Images are resolved once per backend.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import http.client
import io
import os
import re
import stat
import tarfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote

import docker
import docker.errors
import requests
import urllib3.exceptions
import urllib3.response
from docker.types import Mount as DockerMount
from docker.utils.build import exclude_paths
from structlog.typing import FilteringBoundLogger

from runner.backends import docker_connection
from runner.backends.base import EngineInfo, ProgressCallback
from runner.backends.docker_logs import FrameList, batch_frames, read_frames, split_frames
from runner.errors import BackendError, ImageError
from runner.execution import (
    LABEL_EXECUTION,
    LABEL_MANAGED,
    WORKSPACE_PATH,
    BuildImage,
    ContainerExit,
    ContainerSpec,
    ContainerStatus,
    FileToCopy,
    ImageSource,
    LogBatch,
    LogLine,
    ManagedResource,
    PullImage,
    unbatch_lines,
)
from runner.hostpaths import BindSourceTranslator
from runner.logs import module_logger
from runner.settings import ENGINE_WAIT_SECONDS_ENV, engine_wait_seconds

PULL_POLICIES = ("missing", "always", "never")
WORKSPACE_PREFIX = "runner-ws-"
"""An execution's workspace is the named volume WORKSPACE_PREFIX + execution id."""
HELPER_IMAGE = "runner/workspace-helper:1"
"""The empty image of the containers that only reach a workspace volume (see _helper_image)."""
PULL_PROGRESS_INTERVAL_S = 1.0
"""Pull progress is summarised at most this often; the engine sends dozens of events a second."""
BUILD_REPOSITORY = "runner-build"
BUILD_ERROR_TAIL_LINES = 20
"""How many lines of build output a failed build's ImageError quotes."""
LOG_READ_SIZE = 256 * 1024
LOG_CATCH_UP_FRAMES = 16
"""How many of a log's last frames are fetched again after a follow ends (see `logs`)."""

_DISK_FULL = "no space left on device"
_START_ADVICE = (
    "Is Docker running? Start it (e.g. 'sudo systemctl start docker' or Docker Desktop) "
    "or point DOCKER_HOST at a running engine."
)
_OS_ERROR_MODULES = ("builtins", "socket", "ssl")  # not requests' and urllib3's OSError subclasses
_CONNECTION_ERRORS = (
    requests.exceptions.RequestException,
    urllib3.exceptions.HTTPError,
    http.client.HTTPException,
    OSError,
)
_ENGINE_ERRORS = (docker.errors.DockerException, *_CONNECTION_ERRORS)
"""What talking to the engine can raise; anything else (a bug, a failing progress callback)
propagates untranslated."""  # the engine reports an error in-band once the response has started


class _Chunks(Protocol):
    def read1(self, size: int, /) -> bytes: ...


class DockerBackend:
    """Runs containers on one Docker engine; safe to share between the scheduler's threads.

    Resolved images are cached for the life of the instance, so create one backend per run:
    a `policy: always` image is pulled once per run, and a build context is hashed once.
    """

    def __init__(
        self, client: docker.DockerClient | None = None, *, log: FilteringBoundLogger | None = None
    ) -> None:
        self._owns_client = client is None
        self._chosen_by = "a client given by the caller"
        if client is None:
            choice = docker_connection.choose_engine()
            self._chosen_by = choice.reason
            client = docker_connection.connect(choice, _translate, wait_s=engine_wait_seconds())
        self._client = client
        self._api = self._client.api
        self._host = _engine_host(self._api)
        self._log: FilteringBoundLogger = (
            log if log is not None else module_logger("runner.backends.docker")
        )
        self._images: dict[ImageSource, str] = {}
        self._image_locks: dict[ImageSource, threading.Lock] = {}
        self._images_lock = threading.Lock()
        self._helper: str | None = None
        self._translator: BindSourceTranslator | None = None

    @classmethod
    def from_env(cls, *, log: FilteringBoundLogger | None = None) -> DockerBackend:
        """Connect as the docker CLI would: DOCKER_HOST (with DOCKER_TLS_VERIFY and
        DOCKER_CERT_PATH), else DOCKER_CONTEXT, else the current context, else the local
        socket (a named pipe on Windows), waiting for a TCP engine that is coming up; see
        backends/docker_connection.py. Raises BackendError like `check`."""
        return cls(log=log)

    def check(self) -> None:
        try:
            self._api.ping()
        except _ENGINE_ERRORS as exc:
            raise _translate(exc, "reach the Docker engine", self._host) from exc

    def describe(self) -> EngineInfo:
        try:
            info = self._api.info()
            version = self._api.version()
        except _ENGINE_ERRORS as exc:
            raise _translate(exc, "ask the Docker engine what it is", self._host) from exc
        operating_system = str(info.get("OperatingSystem") or version.get("Os") or "?")
        name = "Docker Desktop" if "Docker Desktop" in operating_system else "Docker Engine"
        platform = (version.get("Platform") or {}).get("Name")
        return EngineInfo(
            backend="docker",
            name=str(platform or name),
            version=str(version.get("Version") or "?"),
            os=f"{operating_system} ({info.get('OSType', '?')}/{info.get('Architecture', '?')})",
            address=self._host,
            chosen_by=self._chosen_by,
        )

    # -- images -------------------------------------------------------------------------

    def ensure_image(self, source: ImageSource, progress: ProgressCallback | None = None) -> str:
        """Pull or build `source` once per backend; return an immutable reference to run:
        the image id of a pulled image, the content-addressed tag of a built one."""
        key = _image_key(source)
        with self._images_lock:
            resolved = self._images.get(key)
            if resolved is not None:
                return resolved
            lock = self._image_locks.setdefault(key, threading.Lock())
        report = progress if progress is not None else _ignore
        with lock:  # a second thread needing the same image waits here, then reads the cache
            with self._images_lock:
                resolved = self._images.get(key)
            if resolved is None:
                if isinstance(source, PullImage):
                    resolved = self._resolve_pulled(source, report)
                else:
                    resolved = self._resolve_built(source, report)
                with self._images_lock:
                    self._images[key] = resolved
        return resolved

    def _resolve_pulled(self, source: PullImage, report: ProgressCallback) -> str:
        """Apply the pull policy. With `always`, a failed pull is an error even when a local
        copy exists: the flow asked for the registry's current image, and running a stale one
        silently would hide the failure (the message points at `missing` for offline use)."""
        reference = source.reference
        if source.policy not in PULL_POLICIES:
            raise ImageError(
                f"image '{reference}' has unknown pull policy '{source.policy}' "
                f"(expected one of: {', '.join(PULL_POLICIES)})"
            )
        if source.policy != "always":
            local = self._local_image_id(reference)
            if local is not None:
                return local
            if source.policy == "never":
                raise ImageError(
                    f"image '{reference}' is not on the Docker engine and its pull policy is "
                    f"'never'. Load it with 'docker load' or 'docker pull {reference}', "
                    "or set the pull policy to 'missing'."
                )
        try:
            self._pull(reference, report, missing=source.policy != "always")
        except ImageError as exc:
            if source.policy == "always" and self._local_image_id(reference) is not None:
                raise ImageError(
                    f"{exc} A local copy of '{reference}' exists; set the pull policy to "
                    "'missing' to use it."
                ) from exc
            raise
        image_id = self._local_image_id(reference)
        if image_id is None:
            raise ImageError(
                f"image '{reference}' was pulled but the engine does not list it; "
                "was it removed meanwhile?"
            )
        return image_id

    def _local_image_id(self, reference: str) -> str | None:
        try:
            image = self._api.inspect_image(reference)  # type: ignore[no-untyped-call]  # the stubs leave it untyped
        except docker.errors.ImageNotFound:
            return None
        except _ENGINE_ERRORS as exc:
            raise _translate(exc, f"look up image '{reference}'", self._host) from exc
        return str(image["Id"])

    def _pull(self, reference: str, report: ProgressCallback, *, missing: bool = False) -> None:
        """Pull `reference`; `missing` says it was looked for on the engine and not found."""
        started = time.monotonic()
        summary = _PullProgress(reference)
        error: str | None = None
        self._log.info("image_pull_started", image=reference)
        try:
            for event in self._api.pull(reference, stream=True, decode=True):
                # an error is the engine's last event: read on to the end so that the
                # connection goes back to the pool instead of being dropped half-read
                if error is None and ("error" in event or "errorDetail" in event):
                    error = _event_error(event)
                elif error is None and (text := summary.feed(event)) is not None:
                    report(text)
        except docker.errors.APIError as exc:
            raise _pull_error(reference, _explain(exc), missing=missing) from exc
        except _ENGINE_ERRORS as exc:
            raise _translate(exc, f"pull image '{reference}'", self._host) from exc
        if error is not None:
            raise _pull_error(reference, error, missing=missing)
        self._log.info(
            "image_pulled", image=reference, duration_s=round(time.monotonic() - started, 3)
        )

    def _resolve_built(self, source: BuildImage, report: ProgressCallback) -> str:
        """Build the context once per content: the tag carries a hash of the files the engine
        would receive, so an unchanged context reuses its image without a build."""
        context = source.context.expanduser().absolute()
        if not context.exists():
            raise ImageError(f"cannot build image: the build context '{context}' does not exist")
        if not context.is_dir():
            raise ImageError(f"cannot build image: the build context '{context}' is not a folder")
        if not (context / "Dockerfile").is_file():
            raise ImageError(f"cannot build image: the build context '{context}' has no Dockerfile")
        try:
            digest = _context_digest(context)
        except OSError as exc:
            raise ImageError(f"cannot read the build context '{context}': {exc}") from exc
        tag = f"{BUILD_REPOSITORY}/{_repository_name(context.name)}:{digest}"
        if self._local_image_id(tag) is not None:
            self._log.info("image_build_reused", image=tag, context=str(context))
            return tag
        self._build(context, tag, report)
        return tag

    def _build(self, context: Path, tag: str, report: ProgressCallback) -> None:
        started = time.monotonic()
        tail: deque[str] = deque(maxlen=BUILD_ERROR_TAIL_LINES)
        error: str | None = None
        self._log.info("image_build_started", image=tag, context=str(context))
        try:
            # The context goes to the engine as a tar over the API (docker-py honours
            # .dockerignore), so this works just as well with a remote engine.
            events = self._api.build(
                path=str(context), tag=tag, rm=True, forcerm=True, decode=True, pull=False
            )
            for event in events:
                if error is not None:  # read on to the end, as in _pull
                    continue
                if "error" in event or "errorDetail" in event:
                    error = _event_error(event)
                for line in str(event.get("stream", "")).splitlines():
                    if line.strip():
                        tail.append(line)
                        report(line)
        except docker.errors.APIError as exc:
            reason = _explain(exc)
            if _DISK_FULL in reason.lower():
                raise BackendError(
                    _disk_full_message(reason, f"build image from '{context}'")
                ) from exc
            raise ImageError(f"cannot build image from '{context}': {reason}") from exc
        except _ENGINE_ERRORS as exc:
            raise _translate(exc, f"build image from '{context}'", self._host) from exc
        if error is not None:
            if _DISK_FULL in error.lower():
                raise BackendError(_disk_full_message(error, f"build image from '{context}'"))
            output = "\n".join(f"  {line}" for line in tail)
            raise ImageError(
                f"cannot build image from '{context}': {error}"
                + (f"\nlast lines of the build:\n{output}" if output else "")
            )
        self._log.info("image_built", image=tag, duration_s=round(time.monotonic() - started, 3))

    # -- workspaces ---------------------------------------------------------------------

    def workspace(self, execution_id: str, labels: Mapping[str, str]) -> DockerWorkspace:
        return DockerWorkspace(self, f"{WORKSPACE_PREFIX}{execution_id}", labels)

    def _helper_image(self) -> str:
        """An empty image for containers that are created, never started, only to reach a
        volume through the archive API (put_archive / get_archive need a container).
        Imported from a tar of one folder, so it needs no registry and weighs nothing;
        made once per engine."""
        with self._images_lock:
            if self._helper is not None:
                return self._helper
        if self._local_image_id(HELPER_IMAGE) is None:
            buffer = io.BytesIO()
            with tarfile.open(fileobj=buffer, mode="w") as archive:
                folder = tarfile.TarInfo(WORKSPACE_PATH.strip("/"))
                folder.type, folder.mode = tarfile.DIRTYPE, 0o755
                archive.addfile(folder)
            repository, _, tag = HELPER_IMAGE.partition(":")
            try:
                self._api.import_image_from_data(
                    buffer.getvalue(),
                    repository=repository,
                    tag=tag,
                    changes=[f"LABEL {LABEL_MANAGED}=true"],
                )
            except _ENGINE_ERRORS as exc:
                raise _translate(
                    exc, f"create the helper image {HELPER_IMAGE}", self._host
                ) from exc
        with self._images_lock:
            self._helper = HELPER_IMAGE
        return HELPER_IMAGE

    @contextlib.contextmanager
    def _volume_helper(self, volume: str, labels: Mapping[str, str], what: str) -> Iterator[str]:
        """A never-started container with `volume` at /workspace, removed afterwards; it
        carries the volume's labels so that `cleanup` finds it should the removal fail."""
        image = self._helper_image()
        try:
            host_config = self._api.create_host_config(
                mounts=[DockerMount(WORKSPACE_PATH, volume, type="volume")]
            )
            # a command, because an image without CMD cannot be created without one
            created = self._api.create_container(
                image, command=["true"], labels=dict(labels), host_config=host_config
            )
        except _ENGINE_ERRORS as exc:
            raise _translate(exc, what, self._host) from exc
        container_id = str(created["Id"])
        try:
            yield container_id
        finally:
            self._discard(container_id)

    # -- containers ---------------------------------------------------------------------

    def start(self, spec: ContainerSpec) -> str:
        mounts = []
        if spec.workspace is not None:
            mounts.append(DockerMount(WORKSPACE_PATH, spec.workspace, type="volume"))
        for m in spec.mounts:
            source = m.source
            if m.kind == "bind":
                source = self._bind_source(m.source, f"container {spec.name}: volume {m.written!r}")
            mounts.append(DockerMount(m.target, source, type=m.kind, read_only=m.read_only))
        # init=True runs the engine's tini as PID 1: signals reach the task and orphaned
        # processes are reaped. The price: a missing executable is no longer a start error
        # but exit code 127 (126 if not executable) with tini's message on stderr, as in a shell.
        memory = spec.memory_bytes
        # swap limit = memory limit: no swap, so running out of memory is an OOM kill and
        # not a crawl
        host_config = self._api.create_host_config(
            mounts=mounts,
            init=True,
            network_mode=spec.network,
            nano_cpus=None if spec.cpus is None else round(spec.cpus * 1e9),
            mem_limit=memory,
            memswap_limit=memory,
        )
        try:
            created = self._api.create_container(
                image=spec.image,
                command=list(spec.command) if spec.command is not None else None,
                environment=dict(spec.env),
                labels=dict(spec.labels),
                working_dir=spec.working_dir,
                user=spec.user,
                name=spec.name,
                host_config=host_config,
            )
        except docker.errors.ImageNotFound as exc:
            raise ImageError(
                f"cannot create container '{spec.name}': image '{spec.image}' is not on the "
                "Docker engine (removed since it was prepared?)"
            ) from exc
        except docker.errors.APIError as exc:
            if exc.status_code == 409:
                raise BackendError(
                    f"cannot create container '{spec.name}': a container with that name "
                    f"already exists; remove it with 'docker rm -f {spec.name}'"
                ) from exc
            raise _translate(exc, f"create container '{spec.name}'", self._host) from exc
        except _ENGINE_ERRORS as exc:
            raise _translate(exc, f"create container '{spec.name}'", self._host) from exc
        container_id = str(created["Id"])
        for warning in created.get("Warnings") or ():
            self._log.warning("container_warning", container=spec.name, warning=warning)
        action = f"copy files into container '{spec.name}'"
        try:
            if spec.files or spec.user:
                self._api.put_archive(container_id, "/", _files_archive(spec.files, spec.user))
            action = f"start container '{spec.name}'"
            self._api.start(container_id)
        except docker.errors.APIError as exc:
            self._discard(container_id)
            reason = _explain(exc)
            if _DISK_FULL in reason.lower():
                raise BackendError(_disk_full_message(reason)) from exc
            raise BackendError(f"cannot {action}: {_start_reason(reason)}") from exc
        except _ENGINE_ERRORS as exc:
            self._discard(container_id)
            raise _translate(exc, action, self._host) from exc
        return container_id

    def _bind_source(self, source: str, entry: str) -> str:
        """The path the engine must be given for a bind mount of `source`: a Windows path
        in Docker Desktop's form, a path inside the runner's own container as the host
        sees it (runner.hostpaths). The engine's facts are looked up once."""
        with self._images_lock:
            translator = self._translator
        if translator is None:
            translator = docker_connection.host_path_translator(
                self._client, _translate, host=self._host
            )
            with self._images_lock:
                self._translator = translator
        return translator(source, entry)

    def _discard(self, container_id: str) -> None:
        """Best-effort removal of a container that failed to start; the start error matters more."""
        try:
            self._api.remove_container(container_id, v=True, force=True)
        except Exception as exc:
            self._log.warning(
                "container_discard_failed", container_id=container_id[:12], error=str(exc)
            )

    def logs(self, container_id: str) -> Iterator[LogLine]:
        return unbatch_lines(self.log_batches(container_id))

    def log_batches(self, container_id: str) -> Iterator[LogBatch]:
        """The container's lines in batches, its log read in bulk (`docker_logs`): what
        the attempts read (`backends.base.log_batches`)."""
        return batch_frames(self._log_frames(container_id))

    def _log_frames(self, container_id: str) -> Iterator[FrameList]:
        """Follow the log to its end, then fetch what the follow missed: engine 20.10 ends a
        follow without a last line that lacks its '\\n' in about one run in five, though
        the line is stored by then. The fetch asks for the log's last frames (not `since`
        the last time seen: a stream's last line may be stored after a later-timed one)
        and keeps those after the last frame seen."""
        what = f"read the logs of container {container_id[:12]}"
        last: tuple[int, bytes] | None = None
        following = True
        try:
            with self._log_body(container_id, follow=1) as body:
                for frames in _frame_lists(body, container_id):
                    last = frames[0][-1], frames[1][-1]
                    yield frames
            following = False
            tail = {} if last is None else {"tail": LOG_CATCH_UP_FRAMES}
            with self._log_body(container_id, **tail) as body:
                stored = _every_frame(body, container_id)
            if last is not None and last not in stored and len(stored) == LOG_CATCH_UP_FRAMES:
                with self._log_body(container_id) as body:  # missed more: read it all
                    stored = _every_frame(body, container_id)
        except BackendError:
            raise
        except docker.errors.NotFound as exc:
            if not following:
                return  # removed meanwhile: what it wrote has been read
            raise BackendError(f"cannot {what}: the container does not exist") from exc
        except _ENGINE_ERRORS as exc:
            raise _translate(exc, what, self._host) from exc
        if last is not None:
            seen_at = len(stored) - stored[::-1].index(last) if last in stored else len(stored)
            stored = stored[seen_at:]
        if stored:
            yield [number for number, _ in stored], [payload for _, payload in stored]

    @contextlib.contextmanager
    def _log_body(self, container_id: str, **params: int | str) -> Iterator[_Chunks]:
        # docker-py's public `logs(stream=True)` yields bare payloads and drops the frame
        # header that says which stream (stdout/stderr) each came from; and its
        # `_get_raw_response_socket` + `frames_iter` recipe is for hijacked connections
        # (attach/exec): /logs is an ordinary chunked HTTP response, so the raw socket holds
        # chunk-size lines and the body that http.client already buffered is lost. We read
        # the de-chunked body ourselves with `read1` (it returns what has arrived, so live
        # output is not held back) and split the frames without per-byte Python work.
        url = f"{self._api.base_url}/v{self._api.api_version}/containers/{quote(container_id, safe='')}/logs"
        query = {"stdout": 1, "stderr": 1, "timestamps": 1, **params}
        # timeout=None: a task may stay silent for longer than the API's default timeout.
        response = self._api.get(url, params=query, stream=True, timeout=None)
        try:
            _raise_for_status(response)
            yield _body(response)
        finally:
            response.close()

    def wait(self, container_id: str) -> ContainerExit:
        try:
            result = self._api.wait(container_id, timeout=None)
        except docker.errors.NotFound as exc:
            raise BackendError(
                f"container {container_id[:12]} no longer exists: it was removed while it ran"
            ) from exc
        except _ENGINE_ERRORS as exc:
            raise _translate(exc, f"wait for container {container_id[:12]}", self._host) from exc
        exit_code = int(result["StatusCode"])
        engine_error: Mapping[str, Any] = result.get("Error") or {}
        error = str(engine_error.get("Message") or "") or None
        if exit_code != 137:  # 128 + SIGKILL: only then can it be the kernel's OOM killer
            return ContainerExit(exit_code=exit_code, error=error)
        try:
            state = self._api.inspect_container(container_id)["State"]
        except _ENGINE_ERRORS as exc:
            raise _translate(exc, f"inspect container {container_id[:12]}", self._host) from exc
        return ContainerExit(
            exit_code=exit_code,
            oom_killed=bool(state.get("OOMKilled")),
            error=error,
            started_at=_engine_time(state.get("StartedAt")),
            finished_at=_engine_time(state.get("FinishedAt")),
        )

    def stop(self, container_id: str, grace_s: float) -> None:
        try:
            self._api.stop(container_id, timeout=max(0, round(grace_s)))
        except docker.errors.APIError as exc:
            if exc.status_code in (404, 304):  # gone, or already stopped
                return
            raise _translate(exc, f"stop container {container_id[:12]}", self._host) from exc
        except _ENGINE_ERRORS as exc:
            raise _translate(exc, f"stop container {container_id[:12]}", self._host) from exc

    def kill(self, container_id: str) -> None:
        try:
            self._api.kill(container_id)
        except docker.errors.APIError as exc:
            if exc.status_code in (404, 409):  # gone, or not running: nothing left to kill
                return
            raise _translate(exc, f"kill container {container_id[:12]}", self._host) from exc
        except _ENGINE_ERRORS as exc:
            raise _translate(exc, f"kill container {container_id[:12]}", self._host) from exc

    def node_of(self, container_id: str) -> str | None:
        return None  # one engine: there is no node to tell apart

    def remove(self, container_id: str) -> None:
        self._remove_container(container_id)

    def _remove_container(self, container_id: str) -> bool:
        """Remove a container and its anonymous volumes; False if someone else got there first."""
        try:
            self._api.remove_container(container_id, v=True, force=True)
        except docker.errors.APIError as exc:
            if exc.status_code in (404, 409):  # gone, or its removal is already in progress
                return False
            raise _translate(exc, f"remove container {container_id[:12]}", self._host) from exc
        except _ENGINE_ERRORS as exc:
            raise _translate(exc, f"remove container {container_id[:12]}", self._host) from exc
        return True

    def cleanup(self, labels: Mapping[str, str], *, volumes: bool = True) -> int:
        if not labels:
            # an empty label filter matches everything on the engine, not just runner's
            raise ValueError("cleanup needs at least one label to select what to remove")
        filters = {"label": [f"{key}={value}" for key, value in labels.items()]}
        try:
            containers = self._api.containers(all=True, filters=filters)
        except _ENGINE_ERRORS as exc:
            raise _translate(exc, "list containers to clean up", self._host) from exc
        removed = sum(self._remove_container(str(c["Id"])) for c in containers)
        if not volumes:
            return removed
        try:
            found = self._api.volumes(filters=filters).get("Volumes") or []
        except _ENGINE_ERRORS as exc:
            raise _translate(exc, "list volumes to clean up", self._host) from exc
        for volume in found:
            name = str(volume["Name"])
            try:
                self._api.remove_volume(name, force=True)
            except docker.errors.NotFound:
                continue
            except _ENGINE_ERRORS as exc:
                raise _translate(exc, f"remove volume '{name}'", self._host) from exc
            removed += 1
        return removed

    # -- finding what runner left behind --------------------------------------------------

    def find_containers(self, labels: Mapping[str, str]) -> list[ContainerStatus]:
        filters = {"label": [f"{key}={value}" for key, value in labels.items()]}
        try:
            found = self._api.containers(all=True, filters=filters)
        except _ENGINE_ERRORS as exc:
            raise _translate(exc, "list containers", self._host) from exc
        return [
            ContainerStatus(
                id=str(c["Id"]), running=c.get("State") == "running", labels=c.get("Labels") or {}
            )
            for c in found
        ]

    def list_managed(self) -> list[ManagedResource]:
        filters = {"label": [f"{LABEL_MANAGED}=true"]}
        try:
            containers = self._api.containers(all=True, filters=filters)
            volumes = self._api.volumes(filters=filters).get("Volumes") or []
        except _ENGINE_ERRORS as exc:
            raise _translate(exc, "list runner's containers and volumes", self._host) from exc
        found = [
            ManagedResource(
                kind="container",
                name=str(c["Id"]),
                execution_id=str((c.get("Labels") or {}).get(LABEL_EXECUTION, "")),
                running=c.get("State") == "running",
            )
            for c in containers
        ]
        found += [
            ManagedResource(
                kind="volume",
                name=str(v["Name"]),
                execution_id=str((v.get("Labels") or {}).get(LABEL_EXECUTION, "")),
            )
            for v in volumes
        ]
        return found

    def remove_managed(self, resource: ManagedResource) -> None:
        if resource.kind == "container":
            self._remove_container(resource.name)
        else:
            DockerWorkspace(self, resource.name, {}).remove()

    def close(self) -> None:
        """Close the connections; a client passed in by the caller stays the caller's to close."""
        if self._owns_client:
            self._client.close()


class DockerWorkspace:
    """An execution's workspace on a Docker engine: a named volume. Files go in and out
    through the engine's archive API on a helper container, never through a bind mount,
    so this works the same with a remote engine or Docker-in-Docker."""

    def __init__(self, backend: DockerBackend, name: str, labels: Mapping[str, str]) -> None:
        self._backend = backend
        self._api = backend._api
        self._name = name
        self._labels = dict(labels)

    @property
    def name(self) -> str:
        return self._name

    def create(self) -> None:
        try:
            self._api.create_volume(self._name, labels=self._labels)
        except _ENGINE_ERRORS as exc:
            raise self._error(exc, f"create workspace volume '{self._name}'") from exc

    def exists(self) -> bool:
        try:
            self._api.inspect_volume(self._name)
        except docker.errors.NotFound:
            return False
        except _ENGINE_ERRORS as exc:
            raise self._error(exc, f"inspect workspace volume '{self._name}'") from exc
        return True

    def seed(self, archive: bytes) -> None:
        what = f"copy files into workspace volume '{self._name}'"
        self._must_exist(what)
        with self._backend._volume_helper(self._name, self._labels, what) as helper:
            try:
                self._api.put_archive(helper, WORKSPACE_PATH, archive)
            except _ENGINE_ERRORS as exc:
                raise self._error(exc, what) from exc

    def read(self, path: str) -> Iterator[bytes] | None:
        inside = f"{WORKSPACE_PATH}/{path.strip('/')}".rstrip("/")
        what = f"copy {inside} out of workspace volume '{self._name}'"
        self._must_exist(what)
        helper = self._backend._volume_helper(self._name, self._labels, what)
        container_id = helper.__enter__()
        try:
            stream, _ = self._api.get_archive(container_id, inside, chunk_size=1024 * 1024)
        except docker.errors.NotFound as exc:
            helper.__exit__(None, None, None)
            if "no such container" in _explain(exc).lower():
                raise self._error(exc, what) from exc
            return None  # the path is absent
        except BaseException as exc:
            helper.__exit__(None, None, None)
            if isinstance(exc, _ENGINE_ERRORS):
                raise self._error(exc, what) from exc
            raise
        return self._stream(stream, helper, what)

    def _stream(
        self,
        stream: Iterator[bytes],
        helper: contextlib.AbstractContextManager[str],
        what: str,
    ) -> Iterator[bytes]:
        """`stream`, then the helper container removed (also when the reader stops early)."""
        try:
            yield from stream
        except _ENGINE_ERRORS as exc:
            raise self._error(exc, what) from exc
        finally:
            helper.__exit__(None, None, None)

    def remove(self) -> None:
        try:
            self._api.remove_volume(self._name, force=True)
        except docker.errors.NotFound:
            return
        except _ENGINE_ERRORS as exc:
            raise self._error(exc, f"remove workspace volume '{self._name}'") from exc

    def _must_exist(self, action: str) -> None:
        # Mounting a missing named volume would create it, empty and unlabelled.
        if not self.exists():
            raise BackendError(f"cannot {action}: the volume does not exist (removed?)")

    def _error(self, exc: BaseException, action: str) -> BackendError:
        return _translate(exc, action, self._backend._host)


# -- connecting -------------------------------------------------------------------------


def _engine_host(api: docker.APIClient) -> str:
    """The engine's address as the user would write it in DOCKER_HOST."""
    adapter = api.get_adapter(api.base_url)
    for attribute, scheme in (("socket_path", "unix://"), ("npipe_path", "npipe://")):
        path = getattr(adapter, attribute, None)
        if isinstance(path, str):
            return scheme + path
    ssh_host = getattr(adapter, "ssh_host", None)
    if isinstance(ssh_host, str):
        return ssh_host if ssh_host.startswith("ssh://") else f"ssh://{ssh_host}"
    return re.sub(r"^https?://", "tcp://", api.base_url)


# -- errors -----------------------------------------------------------------------------


def _translate(exc: BaseException, action: str, host: str) -> BackendError:
    """The BackendError to raise for `exc`, which happened while trying to `action`."""
    if isinstance(exc, BackendError):
        return exc
    if isinstance(exc, docker.errors.APIError):  # before OSError: it is a requests error too
        reason = _explain(exc)
        if _DISK_FULL in reason.lower():
            return BackendError(_disk_full_message(reason, action))
        return BackendError(f"cannot {action}: {reason}")
    if isinstance(exc, _CONNECTION_ERRORS) or _cause(exc) is not None:
        return BackendError(_connection_message(exc, action, host))
    return BackendError(f"cannot {action}: {exc}")


def _connection_message(exc: BaseException, action: str, host: str) -> str:
    cause = _cause(exc)
    if isinstance(cause, PermissionError):
        return (
            f"permission denied on the Docker engine socket {host}. Add your user to the "
            "'docker' group ('sudo usermod -aG docker $USER', then log in again) or run "
            "runner as a user who may use Docker."
        )
    if isinstance(cause, ConnectionRefusedError):
        return f"cannot reach the Docker engine at {host}: connection refused. {_START_ADVICE}"
    if isinstance(cause, FileNotFoundError):
        return (
            f"cannot reach the Docker engine at {host}: the socket does not exist. {_START_ADVICE}"
        )
    if isinstance(cause, TimeoutError) or isinstance(exc, requests.exceptions.Timeout):
        return f"cannot {action}: the Docker engine at {host} did not answer in time"
    if "ssl" in type(cause).__module__ or isinstance(exc, requests.exceptions.SSLError):
        return (
            f"cannot reach the Docker engine at {host}: TLS failed ({cause or exc}). "
            "Check DOCKER_CERT_PATH and DOCKER_TLS_VERIFY."
        )
    if action == "reach the Docker engine":
        return f"cannot reach the Docker engine at {host}: {cause or exc}. {_START_ADVICE}"
    return f"cannot {action}: the connection to the Docker engine at {host} failed ({cause or exc})"


def _cause(exc: BaseException) -> OSError | None:
    """The socket-level error buried in a requests/urllib3/docker-py exception, if any."""
    seen: set[int] = set()
    pending: list[BaseException] = [exc]
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, OSError) and type(current).__module__ in _OS_ERROR_MODULES:
            return current
        inner = [current.__cause__, current.__context__, getattr(current, "reason", None)]
        inner += list(current.args)
        pending.extend(e for e in inner if isinstance(e, BaseException))
    return None


def _body(response: requests.Response) -> _Chunks:
    """The de-chunked body of a streamed response. The engine sends one HTTP chunk per log
    line, and calling http.client's `read1` directly rather than through urllib3's wrapper
    cuts the CPU per line by a third; docker-py itself relies on `raw._fp`."""
    raw: urllib3.response.BaseHTTPResponse | None = response.raw
    if raw is None:
        raise BackendError("the Docker engine sent a log response without a body")
    inner = getattr(raw, "_fp", None)
    return inner if isinstance(inner, http.client.HTTPResponse) else raw


def _raise_for_status(response: requests.Response) -> None:
    """Raise docker-py's APIError (NotFound, ...) for an error response, as its own calls do."""
    try:
        response.raise_for_status()
    except requests.exceptions.HTTPError as exc:
        docker.errors.create_api_error_from_http_exception(exc)


def _explain(exc: docker.errors.APIError) -> str:
    """The engine's own words for a refused request."""
    explanation = exc.explanation
    if isinstance(explanation, bytes):
        explanation = explanation.decode("utf-8", "replace")
    return str(explanation or exc).strip()


def _disk_full_message(reason: str, action: str | None = None) -> str:
    """One line for the engine's ENOSPC, whatever it was doing: the daemon's disk (or the
    volume written to) is full, what frees space, and the engine's own words last."""
    during = f" (while trying to {action})" if action else ""
    return (
        f"the Docker daemon's disk is full{during}. Free space with 'runner gc' (removes "
        "the containers and volumes of ended executions) or 'docker system prune' (stopped "
        "containers, unused networks, dangling images, build cache), then try again. "
        f"The engine said: {_one_line(reason)}"
    )


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _start_reason(message: str) -> str:
    """Trim the runtime's preamble: 'OCI runtime create failed: ... exec: "x": executable
    file not found in $PATH: unknown' -> 'exec: "x": executable file not found in $PATH'."""
    for marker in ("unable to start container process: ", "starting container process caused: "):
        if marker in message:
            message = message.rsplit(marker, 1)[1]
    return message.removesuffix(": unknown")


def _event_error(event: Mapping[str, Any]) -> str:
    detail = event.get("errorDetail") or {}
    return str(event.get("error") or detail.get("message") or event).strip()


def _pull_error(reference: str, reason: str, *, missing: bool = False) -> BackendError:
    """The error of a failed pull; `missing`: the engine was asked first and had no copy."""
    if _DISK_FULL in reason.lower():
        return BackendError(_disk_full_message(reason, f"pull image '{reference}'"))
    what = (
        f"image '{reference}' is not on the Docker engine and cannot be pulled"
        if missing
        else f"cannot pull image '{reference}'"
    )
    return ImageError(
        f"{what}: {_one_line(reason).rstrip('.')}. Check the name and your registry login, "
        "or load it with 'docker load'."
    )


# -- images -----------------------------------------------------------------------------


def _ignore(_text: str) -> None:
    return None


def _image_key(source: ImageSource) -> ImageSource:
    if isinstance(source, BuildImage):
        return BuildImage(source.context.expanduser().absolute())
    return source


class _PullProgress:
    """Condenses the engine's pull events (several per layer per second) into a summary
    line at most once per interval: `pulling x: 2/5 layers done, 12.0/48.3 MB`."""

    def __init__(
        self,
        reference: str,
        interval_s: float = PULL_PROGRESS_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._reference = reference
        self._interval_s = interval_s
        self._clock = clock
        self._last = float("-inf")
        self._done: dict[str, bool] = {}
        self._bytes: dict[str, tuple[int, int]] = {}

    def feed(self, event: Mapping[str, Any]) -> str | None:
        status = str(event.get("status", ""))
        layer = event.get("id")
        if status.startswith("Status: "):  # the last event: "Downloaded newer image for x"
            return f"pulling {self._reference}: {status.removeprefix('Status: ')}"
        if status.startswith("Pulling from "):
            self._last = self._clock()
            return f"pulling {self._reference}"
        if not isinstance(layer, str) or not layer:
            return None
        self._done[layer] = status in ("Pull complete", "Already exists")
        detail = event.get("progressDetail") or {}
        if status == "Downloading" and detail.get("total"):
            self._bytes[layer] = (int(detail.get("current", 0)), int(detail["total"]))
        elif status == "Download complete" and layer in self._bytes:
            self._bytes[layer] = (self._bytes[layer][1], self._bytes[layer][1])
        now = self._clock()
        if now - self._last < self._interval_s:
            return None
        self._last = now
        return self.summary()

    def summary(self) -> str:
        done = sum(self._done.values())
        text = f"pulling {self._reference}: {done}/{len(self._done)} layers done"
        if self._bytes:
            current = sum(c for c, _ in self._bytes.values()) / 1e6
            total = sum(t for _, t in self._bytes.values()) / 1e6
            text += f", {current:.1f}/{total:.1f} MB"
        return text


def _repository_name(folder: str) -> str:
    """A folder name made fit for a Docker repository path component."""
    return re.sub(r"[^a-z0-9]+", "-", folder.lower()).strip("-") or "context"


def _context_digest(context: Path) -> str:
    """First 12 hex digits of a sha256 over what a build of `context` sends to the engine:
    each file's relative path, mode and content, sorted; .dockerignore honoured exactly as
    docker-py applies it when it makes the build tar."""
    patterns: list[str] = []
    ignore_file = context / ".dockerignore"
    if ignore_file.is_file():
        lines = (line.strip() for line in ignore_file.read_text().splitlines())
        patterns = [line for line in lines if line and not line.startswith("#")]
    digest = hashlib.sha256()
    for relative in sorted(exclude_paths(str(context), patterns, dockerfile="Dockerfile")):
        path = context / relative
        info = path.lstat()
        name = relative.replace(os.sep, "/").encode("utf-8", "surrogateescape")
        digest.update(b"%s\0%o\0" % (name, info.st_mode))
        if stat.S_ISLNK(info.st_mode):
            digest.update(os.fsencode(os.readlink(path)) + b"\0")
        elif stat.S_ISREG(info.st_mode):
            digest.update(b"%d\0" % info.st_size)
            with path.open("rb") as content:
                while block := content.read(1 << 20):
                    digest.update(block)
    return digest.hexdigest()[:12]


# -- containers -------------------------------------------------------------------------


def _files_archive(files: tuple[FileToCopy, ...], user: str | None) -> bytes:
    """A tar for one put_archive at '/': the files at their absolute paths and, for a
    non-root `user`, the workspace volume's root made world-writable and sticky (like /tmp)
    so every task of the execution can write there whichever user it runs as.

    Missing parent folders are created by the engine (root, 0755); the tar carries no
    entries for them, which would reset the mode of existing ones such as /tmp. Files are
    owned by `user` when it is numeric ("1000" or "1000:1000"), else by root."""
    owner = _numeric_owner(user)
    now = int(time.time())
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
        if user:
            workspace = tarfile.TarInfo(WORKSPACE_PATH.strip("/"))
            workspace.type = tarfile.DIRTYPE
            workspace.mode = 0o1777
            workspace.mtime = now
            archive.addfile(workspace)
        for file in files:
            entry = tarfile.TarInfo(file.path.lstrip("/"))
            entry.size = len(file.content)
            entry.mode = file.mode
            entry.mtime = now
            if owner is not None:
                entry.uid, entry.gid = owner
            archive.addfile(entry, io.BytesIO(file.content))
    return buffer.getvalue()


def _numeric_owner(user: str | None) -> tuple[int, int] | None:
    match = re.fullmatch(r"(\d+)(?::(\d+))?", user or "")
    if match is None:
        return None
    uid = int(match.group(1))
    return uid, int(match.group(2)) if match.group(2) is not None else uid


def _engine_time(value: object) -> datetime | None:
    """Parse the engine's RFC 3339 time; its zero time means 'never'."""
    if not isinstance(value, str) or not value or value.startswith("0001-01-01"):
        return None
    return datetime.fromisoformat(value)


def _frame_lists(body: _Chunks, container_id: str) -> Iterator[FrameList]:
    """The frames of a log response, a read at a time. A chunked HTTP/1.1 body (what the
    engine sends) is de-chunked here from its connection's buffer, many chunks a read:
    http.client's `read1` stops at the end of each chunk, that is at every line."""
    fp = getattr(body, "fp", None)
    if isinstance(body, http.client.HTTPResponse) and body.chunked and fp is not None:
        return read_frames(fp.read1, LOG_READ_SIZE, container_id)
    return split_frames(iter(functools.partial(body.read1, LOG_READ_SIZE), b""), container_id)


def _every_frame(body: _Chunks, container_id: str) -> list[tuple[int, bytes]]:
    """Every frame of a (short) log response, as (stream number, payload)."""
    return [
        frame
        for streams, payloads in _frame_lists(body, container_id)
        for frame in zip(streams, payloads, strict=True)
    ]


def main() -> int:
    """`python -m runner.backends.docker`: the runner image's health check. Exit 0 when
    the engine answers (without waiting for one that is coming up), else 1 with the
    reason on stderr."""
    import sys

    env = dict(os.environ, **{ENGINE_WAIT_SECONDS_ENV: "0"})
    try:
        client = docker_connection.client_from_env(_translate, environ=env)
        client.api.ping()
        client.close()
    except _ENGINE_ERRORS as exc:
        print(f"unhealthy: {_translate(exc, 'reach the Docker engine', '')}", file=sys.stderr)
        return 1
    except BackendError as exc:
        print(f"unhealthy: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
