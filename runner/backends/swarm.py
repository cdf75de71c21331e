"""The Swarm backend: runs each task attempt as a Docker Swarm service, reached through one
manager's API only (DOCKER_HOST, with TLS as for the Docker backend).

How each operation of `runner.backends.base` maps to Swarm (the measurements behind every
choice are in docs/scale-out.md, "What Swarm does, measured"):

    start          one `replicated` service, 1 replica, restart condition none (a removed
                   `replicated-job` service leaves its task and container behind on 20.10);
                   labels of the execution and task run on the service and its container;
                   `cpus`/`memory` as resource limits; tini as init; a json-file log driver
                   that never rotates; script files as Swarm configs mounted at their paths;
                   pinned to the workspace's node (`node.id==`) plus RUNNER_SWARM_CONSTRAINTS
    logs           `GET /tasks/ID/logs?follow=1` for live lines, never trusted to end or to be
                   complete: once the task is final (and whenever the follow stays silent
                   while it runs) a non-follow read after the last line stored is the
                   authority; frames of one stream joined before lines are split
    wait           the task's final state, seen by one poller thread for all followed tasks
                   (Swarm sends no task events): exit code from its container status,
                   "rejected" and pending-forever as errors quoting Swarm, a task whose node
                   goes down as "node NODE down" (the task itself says running forever)
    stop / kill    a service update adding a constraint no node meets: the task is shut
                   down with the service's stop grace period (10 s) and, unlike a scale to 0
                   or a removal, stays listed with its exit code and its logs until `remove`
    remove         remove the service, then its configs
    workspace      a named volume on one node, chosen least busy first when the execution
                   starts; an "anchor" config (labels: workspace, node) records which node,
                   so that any runner process finds it; files go in through configs (or, past
                   8 MB, an image pushed to RUNNER_REGISTRY) unpacked by a helper task on that
                   node, come out as `tar | base64` written by a helper task and read through
                   its logs; the volume is removed by a helper task with the node's socket
    build:         built on the manager's engine, pushed to RUNNER_REGISTRY, run by digest
    image:         passed to Swarm as written: every node pulls it (or uses its own copy)

Errors are translated as in the Docker backend (`BackendError`, `ImageError`), through its
functions: this module and backends/docker*.py are the only ones importing `docker`.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import queue
import random
import re
import socket
import tarfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import docker
import docker.errors
import requests
from docker.types import (
    ConfigReference,
    DriverConfig,
    NetworkAttachmentConfig,
    Placement,
    Resources,
    RestartPolicy,
    ServiceMode,
    TaskTemplate,
)
from docker.types import ContainerSpec as SwarmContainerSpec
from docker.types import Mount as SwarmMount
from structlog.typing import FilteringBoundLogger

from runner.archives import DEFAULT_MAX_ARTIFACT_BYTES
from runner.backends import docker_connection
from runner.backends.base import EngineInfo, NodeInfo, ProgressCallback
from runner.backends.docker import (
    _ENGINE_ERRORS,
    LOG_READ_SIZE,
    PULL_POLICIES,
    WORKSPACE_PREFIX,
    DockerBackend,
    _body,
    _Chunks,
    _engine_host,
    _explain,
    _image_key,
    _numeric_owner,
    _raise_for_status,
    _translate,
)
from runner.backends.docker_logs import FRAME_HEADER as _FRAME_HEADER
from runner.backends.docker_logs import assemble_lines as _assemble_lines
from runner.errors import BackendError, ImageError
from runner.execution import (
    LABEL_EXECUTION,
    LABEL_MANAGED,
    LABEL_PREFIX,
    WORKSPACE_PATH,
    BuildImage,
    ContainerExit,
    ContainerSpec,
    ContainerStatus,
    ImageSource,
    LogLine,
    ManagedResource,
    PullImage,
)
from runner.logs import module_logger
from runner.settings import (
    REGISTRY_ENV,
    SWARM_CONSTRAINTS_ENV,
    SWARM_HELPER_IMAGE_ENV,
    SWARM_PENDING_SECONDS_ENV,
    SettingError,
    engine_wait_seconds,
    registry,
    swarm_constraints,
    swarm_helper_image,
    swarm_pending_seconds,
)
from runner.specs import label_value

POLL_S = 0.05
"""How often the poller asks for the tasks it follows (one call per execution followed):
a task's end is seen at most this late. Swarm has no task events (docs/scale-out.md, 1)."""
NODES_POLL_S = 1.0
"""How often it asks for the nodes' states; Swarm itself needs ~13 s to call a node down."""
UNREACHABLE_S = 60.0
"""How long the manager may fail to answer the poller before every followed task fails."""
GONE_CHECK_S = 3.0
"""A service whose task has not appeared after this long is checked for existence."""
STOP_GRACE_S = 10.0
"""Every service's stop grace period: SIGTERM, then SIGKILL after this. Swarm fixes it when
the service is created and has no kill of its own, so `kill` and `stop` both take it."""
STOP_CONSTRAINT = f"node.labels.{LABEL_PREFIX}stopped==true"
"""The constraint a stop adds: no node has that label, so the replacement task the update
asks for stays pending and the stopped task stays listed (with its logs) until removal."""
FINAL_STATES = frozenset({"complete", "failed", "rejected", "shutdown", "orphaned", "remove"})
UNPLACED_STATES = frozenset({"new", "pending"})
LOST_NODE_STATES = frozenset({"down", "disconnected", "unknown"})
LOG_OPTIONS = {"max-size": "1000g", "max-file": "1"}
"""json-file without rotation (a node's default driver or rotation would lose lines
silently; `-1` is refused): every task and helper gets it explicitly."""
FOLLOW_AFTER_S = 0.5
"""A task's log is followed once it has run this long: a shorter task's lines come in the
one read after its end, which a follow would only delay (measured in bench rows)."""
STALL_S = 5.0
"""A followed log silent this long while its task runs is read again without follow (a
follow can stall for good, docs/scale-out.md, 2)."""
CATCH_UP_MARGIN_NS = 1_000_000_000
"""A non-follow read starts this much before the last line already read: the lines of two
streams are stored in the order they arrived, their times may disagree by microseconds."""
CONFIG_MAX_BYTES = 1_000_000
"""One Swarm config holds less than 1,024,000 bytes (measured: 1,024,000 is refused)."""
SEED_CONFIGS_MAX_BYTES = 8_000_000
"""Seeds up to this size go through configs (each one a raft entry on every manager); larger
ones through an image pushed to RUNNER_REGISTRY, when it is set."""
STOP_WAIT_EXTRA_S = 30.0

LABEL_HELPER = LABEL_PREFIX + "helper"  # on helper services: what they do (seed, read, ...)
LABEL_WORKSPACE = LABEL_PREFIX + "workspace"  # on anchors, helpers and volumes: its name
LABEL_NODE = LABEL_PREFIX + "node"  # on anchors: the id of the workspace's node
LABEL_OWNER = LABEL_PREFIX + "owner"  # on configs: the name of the service that mounts them

_SERVICE_NAME_UNSAFE = re.compile(r"[^A-Za-z0-9-]+")
_SERVICE_NAME_MAX = 63
_CONSTRAINT = re.compile(
    r"^(?P<key>node\.(?:id|hostname|role|platform\.os|platform\.arch|labels\.[^=!\s]+)"
    r"|engine\.labels\.[^=!\s]+)\s*(?P<op>==|!=)\s*(?P<value>\S.*)$"
)
_SYSTEM_ERROR_STREAM = 3
_OUTPUT_STREAMS = (1, 2)

READ_SCRIPT = """set -o pipefail
cd /workspace || exit 4
p="$RUNNER_PATH"
if [ -z "$p" ]; then d=/; n=workspace
elif [ -e "$p" ] || [ -L "$p" ]; then d=$(dirname -- "$p"); n=$(basename -- "$p")
else exit 3
fi
size=$(du -s --apparent-size -B1 -- "$d/$n" | cut -f1)
if [ "$size" -gt "$RUNNER_MAX_BYTES" ]; then echo "$size"; exit 5; fi
tar -c --sparse -C "$d" -- "$n" | base64 -w 0"""
"""The read helper: the path as a tar (entries named as `docker cp` names them; sparse
files kept small), base64 on one unbroken line, so that it arrives in 16 KiB frames. Exit 3
when the path is absent, 5 (printing the size) when it holds more than RUNNER_MAX_BYTES:
the whole archive passes through the task's log before anything of it is read."""
READ_MISSING = 3
READ_TOO_BIG = 5
READ_MAX_BYTES = DEFAULT_MAX_ARTIFACT_BYTES
_PROBABLY_OOM = "killed (exit 137): probably out of memory"

OOM_SCRIPT = r"""
use IO::Socket::UNIX;
my $answer = "";
for my $try (1 .. 4) {
  my $c = IO::Socket::UNIX->new(Peer => "/var/run/docker.sock") or die "docker.sock: $!\n";
  print $c "GET /containers/$ARGV[0]/json HTTP/1.0\r\nHost: docker\r\n\r\n";
  local $/; $answer = <$c>; close $c;
  last if $answer =~ m{"OOMKilled":true};
  select(undef, undef, undef, 0.5);
}
if ($answer =~ m{"OOMKilled":(true|false)}) { print "$1\n"; exit 0 }
print $answer; exit 1;
"""
"""The OOM question, asked of the node's engine (Swarm's task has no OOM flag); asked again
for up to 1.5 s while the answer is no: the engine may record the kernel's OOM event after
the exit that Swarm already reported."""

SEED_SCRIPT = "set -o pipefail; cat /runner-seed/* | tar -x -C /workspace"
SEED_IMAGE_SCRIPT = "tar -x -C /workspace -f /runner-seed.tar"
OPEN_SCRIPT = "chmod 1777 /workspace"

REMOVE_SCRIPT = r"""
use strict; use IO::Socket::UNIX;
sub call {
  my ($method, $path) = @_;
  my $c = IO::Socket::UNIX->new(Peer => "/var/run/docker.sock") or die "docker.sock: $!\n";
  print $c "$method $path HTTP/1.0\r\nHost: docker\r\n\r\n";
  my $status = <$c>; local $/; my $rest = <$c>; close $c;
  my ($code) = $status =~ m{^HTTP/\S+ (\d+)};
  my ($body) = ($rest // "") =~ m{\r?\n\r?\n(.*)}s;
  return ($code // 0, $body // "");
}
my ($volume, $label) = @ARGV;
my $bad = 0;
for my $try (1 .. 200) {
  my ($code, $body) = call("DELETE", "/volumes/$volume");
  if ($code == 204 || $code == 404) { print "volume $volume: $code\n"; last }
  if ($code == 409 && $try < 200) { select(undef, undef, undef, 0.1); next }
  print "volume $volume: $code $body\n"; $bad = 1; last;
}
if ($label) {
  my ($code, $body) = call("GET", "/images/json?filters=%7B%22label%22%3A%5B%22$label%22%5D%7D");
  for my $id ($body =~ m{"Id":"(sha256:[0-9a-f]+)"}g) {
    my ($removed) = call("DELETE", "/images/$id?force=1");
    print "image $id: $removed\n";
  }
}
exit $bad;
"""
"""The removal helper (perl-base only: no curl in debian-slim): the workspace volume through
the node's own socket, retried while a just-removed task's container still holds it (409),
then the seed images of the execution (label filter)."""


# -- what the poller knows -----------------------------------------------------------------


@dataclass
class _Followed:
    """One service the poller follows: its (first) task as last seen, and why it ended."""

    service_id: str
    filters: tuple[tuple[str, str], ...]  # the tasks filter it is polled with
    created: float
    pinned: str | None = None  # the node id its placement names, if any
    task: dict[str, Any] | None = None
    task_id: str | None = None
    ended: str | None = None  # final | lost | unplaceable | gone | unreachable
    reason: str = ""
    stopped: bool = False  # stopped or killed by this backend
    checked: float = 0.0
    running_since: float | None = None  # when the poller first saw it running
    done: threading.Event = field(default_factory=threading.Event)

    @property
    def state(self) -> str:
        return str(self.task["Status"]["State"]) if self.task is not None else "new"

    @property
    def node_id(self) -> str | None:
        found = self.task.get("NodeID") if self.task is not None else None
        return str(found) if found else None


class _Poller:
    """One thread polling the manager for every followed service's task (one `tasks` call
    per distinct filter, i.e. per execution) and, less often, for the nodes' states."""

    def __init__(
        self, api: docker.APIClient, host: str, pending_s: float, log: FilteringBoundLogger
    ) -> None:
        self._api = api
        self._raw: Any = api  # the same client, for the calls the stubs leave untyped
        self._host = host
        self._pending_s = pending_s
        self._log = log
        self._changed = threading.Condition()
        self._followed: dict[str, _Followed] = {}
        self._nodes: dict[str, dict[str, Any]] = {}
        self._nodes_at = float("-inf")
        self._failing_since: float | None = None
        self._thread: threading.Thread | None = None
        self._closed = False

    def follow(
        self, service_id: str, filters: tuple[tuple[str, str], ...], pinned: str | None
    ) -> _Followed:
        with self._changed:
            followed = self._followed.get(service_id)
            if followed is None:
                followed = _Followed(service_id, filters, time.monotonic(), pinned)
                self._followed[service_id] = followed
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="swarm-poller", daemon=True)
                self._thread.start()
            self._changed.notify_all()
        return followed

    def get(self, service_id: str) -> _Followed | None:
        with self._changed:
            return self._followed.get(service_id)

    def forget(self, service_id: str) -> None:
        with self._changed:
            self._followed.pop(service_id, None)

    def wait_for_change(self, timeout: float) -> None:
        with self._changed:
            self._changed.wait(timeout)

    def close(self) -> None:
        with self._changed:
            self._closed = True
            self._changed.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def nodes(self, *, max_age: float = NODES_POLL_S) -> dict[str, dict[str, Any]]:
        """node id -> the node as the manager describes it, at most `max_age` seconds old."""
        with self._changed:
            fresh = time.monotonic() - self._nodes_at <= max_age
            if fresh:
                return dict(self._nodes)
        try:
            found = self._api.nodes()
        except _ENGINE_ERRORS as exc:
            raise _translate(exc, "list the Swarm's nodes", self._host) from exc
        with self._changed:
            self._nodes = {str(n["ID"]): n for n in found}
            self._nodes_at = time.monotonic()
            return dict(self._nodes)

    def _run(self) -> None:
        while True:
            with self._changed:
                while not self._closed and all(f.done.is_set() for f in self._followed.values()):
                    self._changed.wait()
                if self._closed:
                    return
                active = [f for f in self._followed.values() if not f.done.is_set()]
            try:
                self._poll(active)
                self._failing_since = None
            except (BackendError, *_ENGINE_ERRORS) as exc:
                now = time.monotonic()
                if self._failing_since is None:
                    self._failing_since = now
                    self._log.warning("swarm_poll_failed", error=str(exc))
                if now - self._failing_since > UNREACHABLE_S:
                    reason = (
                        f"the Swarm manager at {self._host} has not answered for "
                        f"{UNREACHABLE_S:.0f}s ({exc})"
                    )
                    for followed in active:
                        self._end(followed, "unreachable", reason)
            with self._changed:
                self._changed.notify_all()
                if not self._closed:
                    self._changed.wait(POLL_S)

    def _poll(self, active: Sequence[_Followed]) -> None:
        by_service: dict[str, list[dict[str, Any]]] = {}
        for filters in sorted({f.filters for f in active}):
            query: dict[str, list[str]] = {}
            for key, value in filters:
                query.setdefault(key, []).append(value)
            for task in self._raw.tasks(filters=query):
                by_service.setdefault(str(task["ServiceID"]), []).append(task)
        nodes = self.nodes()
        now = time.monotonic()
        for followed in active:
            self._update(followed, by_service.get(followed.service_id, []), nodes, now)

    def _update(
        self,
        followed: _Followed,
        tasks: list[dict[str, Any]],
        nodes: dict[str, dict[str, Any]],
        now: float,
    ) -> None:
        if followed.task_id is None:
            if not tasks:
                if now - followed.created > GONE_CHECK_S and now - followed.checked > GONE_CHECK_S:
                    followed.checked = now
                    if not self._service_exists(followed.service_id):
                        self._end(followed, "gone", "its service was removed")
                return
            # the service's first task: a stop adds a second one, which never runs
            first = min(tasks, key=lambda t: str(t.get("CreatedAt", "")))
            followed.task_id = str(first["ID"])
        task = next((t for t in tasks if t["ID"] == followed.task_id), None)
        if task is None:
            self._end(followed, "gone", "its task disappeared (was its service removed?)")
            return
        followed.task = task
        status = task.get("Status") or {}
        state = str(status.get("State", ""))
        if state == "running" and followed.running_since is None:
            followed.running_since = now
        if state in FINAL_STATES:
            self._end(followed, "final")
            return
        if state in UNPLACED_STATES and task.get("DesiredState") in ("shutdown", "remove"):
            self._end(followed, "final")  # stopped before any node took it
            return
        node_id = followed.node_id
        if node_id is not None:
            node = nodes.get(node_id) or self.nodes(max_age=0).get(node_id)
            node_state = _node_state(node)
            if node_state in LOST_NODE_STATES or node is None:
                name = _node_name(node, node_id)
                message = ((node or {}).get("Status") or {}).get("Message") or "gone"
                self._end(followed, "lost", f"node {name} {node_state or 'gone'} ({message})")
            return
        if state in UNPLACED_STATES:
            error = str(status.get("Err") or "")
            pinned = nodes.get(followed.pinned) if followed.pinned else None
            if followed.pinned and (pinned is None or _node_state(pinned) in LOST_NODE_STATES):
                name = _node_name(pinned, followed.pinned)
                self._end(
                    followed,
                    "unplaceable",
                    f"its node {name} (where the execution's workspace is) is "
                    f"{_node_state(pinned) or 'gone'}",
                )
            elif error and now - followed.created > self._pending_s:
                self._end(
                    followed,
                    "unplaceable",
                    f"no node took it in {self._pending_s:g}s ({SWARM_PENDING_SECONDS_ENV}):"
                    f" {error}",
                )

    def _service_exists(self, service_id: str) -> bool:
        try:
            self._raw.inspect_service(service_id)
        except docker.errors.NotFound:
            return False
        return True

    def _end(self, followed: _Followed, how: str, reason: str = "") -> None:
        if followed.done.is_set():
            return
        followed.ended, followed.reason = how, reason
        followed.done.set()


def _node_state(node: Mapping[str, Any] | None) -> str:
    return str(((node or {}).get("Status") or {}).get("State") or "")


def _node_name(node: Mapping[str, Any] | None, node_id: str | None = None) -> str:
    hostname = ((node or {}).get("Description") or {}).get("Hostname")
    return str(hostname or (node_id or "?")[:12])


# -- the backend -----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Started:
    """What start() knew about a service, for the calls that follow on it."""

    name: str
    filters: tuple[tuple[str, str], ...]
    pinned: str | None
    configs: tuple[str, ...]


@dataclass(frozen=True)
class _Constraint:
    key: str
    equal: bool
    value: str
    text: str

    def matches(self, node: Mapping[str, Any]) -> bool:
        found = _node_value(node, self.key)
        same = found is not None and found.casefold() == self.value.casefold()
        return same if self.equal else not same


def parse_constraints(texts: Sequence[str]) -> tuple[_Constraint, ...]:
    """RUNNER_SWARM_CONSTRAINTS, checked: the runner evaluates them itself to choose a
    workspace's node, so only what it can evaluate is accepted."""
    parsed = []
    for text in texts:
        match = _CONSTRAINT.match(text)
        if match is None:
            raise SettingError(
                f"{SWARM_CONSTRAINTS_ENV}: {text!r} is not a constraint the runner knows; use "
                "node.id, node.hostname, node.role, node.platform.os, node.platform.arch, "
                "node.labels.NAME or engine.labels.NAME with == or != (e.g. "
                "node.labels.pool==etl)"
            )
        parsed.append(
            _Constraint(match["key"], match["op"] == "==", match["value"].strip(), text.strip())
        )
    return tuple(parsed)


def _node_value(node: Mapping[str, Any], key: str) -> str | None:
    spec = node.get("Spec") or {}
    description = node.get("Description") or {}
    platform = description.get("Platform") or {}
    if key.startswith("node.labels."):
        value = (spec.get("Labels") or {}).get(key.removeprefix("node.labels."))
    elif key.startswith("engine.labels."):
        labels = (description.get("Engine") or {}).get("Labels") or {}
        value = labels.get(key.removeprefix("engine.labels."))
    else:
        value = {
            "node.id": node.get("ID"),
            "node.hostname": description.get("Hostname"),
            "node.role": spec.get("Role"),
            "node.platform.os": platform.get("OS"),
            "node.platform.arch": platform.get("Architecture"),
        }[key]
    return None if value is None else str(value)


class SwarmBackend:
    """Runs task attempts as services of a Docker Swarm; safe to share between threads.

    Create one per run, like the Docker backend: resolved images are cached for its life,
    and its poller thread follows the services it starts (or adopts) until they end."""

    def __init__(
        self,
        client: docker.DockerClient | None = None,
        *,
        log: FilteringBoundLogger | None = None,
        registry_address: str | None = None,
        constraints: Sequence[str] | None = None,
        helper_image: str | None = None,
        pending_s: float | None = None,
    ) -> None:
        self._owns_client = client is None
        self._chosen_by = "a client given by the caller"
        self._registry = registry() if registry_address is None else registry_address
        self._constraints = parse_constraints(
            swarm_constraints() if constraints is None else constraints
        )
        self._helper_image = helper_image or swarm_helper_image()
        pending = swarm_pending_seconds() if pending_s is None else pending_s
        if client is None:
            choice = docker_connection.choose_engine()
            self._chosen_by = choice.reason
            client = docker_connection.connect(choice, _translate, wait_s=engine_wait_seconds())
        self._client = client
        self._api: docker.APIClient = client.api
        self._raw: Any = client.api  # the same client, for the calls the stubs leave untyped
        self._host = _engine_host(self._api)
        self._log: FilteringBoundLogger = (
            log if log is not None else module_logger("runner.backends.swarm")
        )
        self._poller = _Poller(self._api, self._host, pending, self._log)
        self._lock = threading.Lock()
        self._images: dict[ImageSource, str] = {}
        self._image_locks: dict[ImageSource, threading.Lock] = {}
        self._builder: DockerBackend | None = None
        self._started: dict[str, _Started] = {}
        self._workspace_nodes: dict[str, str] = {}  # workspace name -> node id
        self._created_here: set[str] = set()  # anchors (config names) this process made
        self._used: set[str] = set()  # workspaces a task or helper of this process mounted
        self._opened: set[str] = set()  # workspaces made writable for every user

    @classmethod
    def from_env(cls, *, log: FilteringBoundLogger | None = None) -> SwarmBackend:
        """Connect to the manager as the Docker backend connects to an engine (DOCKER_HOST,
        DOCKER_TLS_VERIFY, DOCKER_CERT_PATH, contexts); RUNNER_REGISTRY,
        RUNNER_SWARM_CONSTRAINTS, RUNNER_SWARM_HELPER_IMAGE and RUNNER_SWARM_PENDING_SECONDS
        are read here."""
        return cls(log=log)

    # -- the engine ------------------------------------------------------------------------

    def check(self) -> None:
        self._manager_info()

    def _manager_info(self) -> dict[str, Any]:
        """The engine's `info`, once it is known to be a Swarm manager."""
        try:
            info: dict[str, Any] = self._api.info()
        except _ENGINE_ERRORS as exc:
            raise _translate(exc, "reach the Docker engine", self._host) from exc
        swarm = info.get("Swarm") or {}
        if not swarm.get("ControlAvailable"):
            state = swarm.get("LocalNodeState") or "inactive"
            raise BackendError(
                f"the Docker engine at {self._host} is not a Swarm manager (its swarm state: "
                f"{state}). Point DOCKER_HOST at a manager (where `docker node ls` works), "
                "or set RUNNER_BACKEND=docker to run on this engine alone."
            )
        return info

    def describe(self) -> EngineInfo:
        info = self._manager_info()
        try:
            version = self._api.version()
            tasks = self._raw.tasks(
                filters={"label": f"{LABEL_MANAGED}=true", "desired-state": "running"}
            )
        except _ENGINE_ERRORS as exc:
            raise _translate(exc, "ask the Swarm manager what it is", self._host) from exc
        nodes = self._poller.nodes(max_age=0)
        held = Counter(
            str(t.get("NodeID"))
            for t in tasks
            if t.get("NodeID") and t["Status"]["State"] not in FINAL_STATES
        )
        shown = tuple(
            sorted(
                (
                    NodeInfo(
                        name=_node_name(node, node_id),
                        id=node_id,
                        role=str((node.get("Spec") or {}).get("Role") or "?"),
                        state=_node_state(node) or "?",
                        availability=str((node.get("Spec") or {}).get("Availability") or "?"),
                        address=str((node.get("Status") or {}).get("Addr") or ""),
                        task_runs=held[node_id],
                    )
                    for node_id, node in nodes.items()
                ),
                key=lambda n: (n.role != "manager", n.name),
            )
        )
        operating_system = str(info.get("OperatingSystem") or version.get("Os") or "?")
        return EngineInfo(
            backend="swarm",
            name="Docker Swarm",
            version=str(version.get("Version") or "?"),
            os=f"{operating_system} ({info.get('OSType', '?')}/{info.get('Architecture', '?')})",
            address=self._host,
            chosen_by=self._chosen_by,
            nodes=shown,
        )

    # -- images ------------------------------------------------------------------------------

    def ensure_image(self, source: ImageSource, progress: ProgressCallback | None = None) -> str:
        """An `image:` is given to Swarm as written (every node pulls it, or uses its own
        copy); a `build:` is built on the manager, pushed to RUNNER_REGISTRY and run by the
        digest the push returned, so every node runs the same bits (moby#26852)."""
        key = _image_key(source)
        with self._lock:
            resolved = self._images.get(key)
            if resolved is not None:
                return resolved
            lock = self._image_locks.setdefault(key, threading.Lock())
        with lock:
            with self._lock:
                resolved = self._images.get(key)
            if resolved is None:
                if isinstance(source, PullImage):
                    resolved = self._resolve_pulled(source)
                else:
                    resolved = self._resolve_built(source, progress)
                with self._lock:
                    self._images[key] = resolved
        return resolved

    def _resolve_pulled(self, source: PullImage) -> str:
        if source.policy not in PULL_POLICIES:
            raise ImageError(
                f"image '{source.reference}' has unknown pull policy '{source.policy}' "
                f"(expected one of: {', '.join(PULL_POLICIES)})"
            )
        # Swarm's nodes pull when they prepare a task and fall back to their own copy when
        # the pull fails; a node that has neither rejects the task, with its reason.
        return source.reference

    def _resolve_built(self, source: BuildImage, progress: ProgressCallback | None) -> str:
        if not self._registry:
            raise ImageError(
                f"cannot use `build: {source.context}` on Swarm: {REGISTRY_ENV} is not set. "
                "Images built for a swarm go to a registry every node pulls from; set "
                f"{REGISTRY_ENV} to its address (e.g. 127.0.0.1:5000 for a `registry` "
                "service published on every node)."
            )
        builder = self._docker_on_manager()
        local = builder.ensure_image(source, progress)  # runner-build/NAME:HASH, once a content
        repository, _, tag = local.rpartition(":")
        target = f"{self._registry}/{repository}"
        try:
            self._api.tag(local, target, tag)
        except _ENGINE_ERRORS as exc:
            raise _translate(exc, f"tag image '{local}' as '{target}:{tag}'", self._host) from exc
        return self._push(target, tag, progress)

    def _push(self, repository: str, tag: str, progress: ProgressCallback | None) -> str:
        """Push `repository:tag` from the manager; return `repository@DIGEST`."""
        started = time.monotonic()
        digest = ""
        error = ""
        try:
            for event in self._api.push(repository, tag, stream=True, decode=True):
                if "error" in event or "errorDetail" in event:
                    error = error or str(
                        event.get("error") or (event.get("errorDetail") or {}).get("message")
                    )
                digest = str((event.get("aux") or {}).get("Digest") or digest)
        except docker.errors.APIError as exc:
            raise ImageError(f"cannot push '{repository}:{tag}': {_explain(exc)}") from exc
        except _ENGINE_ERRORS as exc:
            raise _translate(exc, f"push '{repository}:{tag}'", self._host) from exc
        if error or not digest:
            raise ImageError(
                f"cannot push '{repository}:{tag}' to {self._registry} ({REGISTRY_ENV}): "
                f"{error or 'the registry returned no digest'}. Is the registry running and "
                "reachable from the Swarm manager?"
            )
        if progress is not None:
            progress(f"pushed {repository}:{tag}")
        self._log.info(
            "image_pushed",
            image=f"{repository}@{digest}",
            duration_s=round(time.monotonic() - started, 3),
        )
        return f"{repository}@{digest}"

    def _docker_on_manager(self) -> DockerBackend:
        """The Docker backend on the manager's own engine: it builds (once per content)."""
        with self._lock:
            if self._builder is None:
                self._builder = DockerBackend(self._client, log=self._log)
            return self._builder

    # -- workspaces --------------------------------------------------------------------------

    def workspace(self, execution_id: str, labels: Mapping[str, str]) -> SwarmWorkspace:
        return SwarmWorkspace(self, execution_id, labels)

    def _anchors(self, workspace: str) -> list[dict[str, Any]]:
        """The configs that record on which node(s) `workspace` was created."""
        try:
            found = self._raw.configs(filters={"label": f"{LABEL_WORKSPACE}={workspace}"})
        except _ENGINE_ERRORS as exc:
            raise _translate(exc, f"look up workspace '{workspace}'", self._host) from exc
        return sorted(found, key=lambda c: str(c.get("CreatedAt", "")))

    def _live_node(self, workspace: str) -> str | None:
        """The node id of the newest anchor of `workspace` whose node is up, or None."""
        nodes = self._poller.nodes()
        live = None
        for anchor in self._anchors(workspace):
            node_id = _anchor_node(anchor)
            if _node_state(nodes.get(node_id)) == "ready":
                live = node_id
        if live is not None:
            with self._lock:
                self._workspace_nodes[workspace] = live
        return live

    def _workspace_node(self, workspace: str) -> str:
        """The node of `workspace`, which must be up: a task that needs it runs there."""
        with self._lock:
            node_id = self._workspace_nodes.get(workspace)
        if node_id is None:
            node_id = self._live_node(workspace)
        nodes = self._poller.nodes()
        if node_id is not None and _node_state(nodes.get(node_id)) == "ready":
            return node_id
        anchors = self._anchors(workspace)
        if not anchors:
            raise BackendError(f"the workspace '{workspace}' does not exist (removed?)")
        last = _anchor_node(anchors[-1]) if node_id is None else node_id
        node = nodes.get(last)
        raise BackendError(
            f"the workspace '{workspace}' is on node {_node_name(node, last)}, which is "
            f"{_node_state(node) or 'gone'}: the workspace is lost with it. `runner restart` "
            "runs the execution again from its first task on another node."
        )

    def _choose_node(self) -> dict[str, Any]:
        """The node for a new workspace: among the ready, active nodes that meet
        RUNNER_SWARM_CONSTRAINTS, the one holding the fewest unfinished tasks and
        workspaces of runner (ties broken at random, so that executions started one
        after another spread too)."""
        nodes = self._poller.nodes(max_age=0)
        eligible = [
            node
            for node in nodes.values()
            if _node_state(node) == "ready"
            and (node.get("Spec") or {}).get("Availability") == "active"
            and all(c.matches(node) for c in self._constraints)
        ]
        if not eligible:
            seen = ", ".join(
                f"{_node_name(n, i)} ({_node_state(n)}, "
                f"{(n.get('Spec') or {}).get('Availability')})"
                for i, n in nodes.items()
            )
            wanted = ", ".join(c.text for c in self._constraints) or "none"
            raise BackendError(
                f"no Swarm node can take a new workspace: none is ready, active and meets "
                f"{SWARM_CONSTRAINTS_ENV} ({wanted}); nodes: {seen}"
            )
        try:
            tasks = self._raw.tasks(
                filters={"label": f"{LABEL_MANAGED}=true", "desired-state": "running"}
            )
            anchors = self._raw.configs(filters={"label": LABEL_WORKSPACE})
        except _ENGINE_ERRORS as exc:
            raise _translate(exc, "count the tasks on each Swarm node", self._host) from exc
        load = Counter(
            str(t.get("NodeID")) for t in tasks if t["Status"]["State"] not in FINAL_STATES
        )
        load.update(_anchor_node(a) for a in anchors)
        least = min(load[str(n["ID"])] for n in eligible)
        return random.choice([n for n in eligible if load[str(n["ID"])] == least])

    def _create_anchor(self, workspace: str, labels: Mapping[str, str]) -> str:
        node = self._choose_node()
        node_id = str(node["ID"])
        name = f"{workspace}.{node_id[:12]}"
        data = json.dumps(
            {"workspace": workspace, "node": node_id, "hostname": _node_name(node)}
        ).encode()
        anchor_labels = {**labels, LABEL_WORKSPACE: workspace, LABEL_NODE: node_id}
        try:
            self._api.create_config(name, data, labels=anchor_labels)
        except docker.errors.APIError as exc:
            if exc.status_code != 409:  # 409: made already (a second create) is fine
                raise _translate(exc, f"create workspace '{workspace}'", self._host) from exc
        except _ENGINE_ERRORS as exc:
            raise _translate(exc, f"create workspace '{workspace}'", self._host) from exc
        with self._lock:
            self._workspace_nodes[workspace] = node_id
            self._created_here.add(name)
        self._log.info("workspace_placed", workspace=workspace, node=_node_name(node))
        return node_id

    def _remove_anchor(self, anchor: Mapping[str, Any], labels: Mapping[str, str]) -> None:
        """Remove the volume the anchor stands for on its node (a helper task there), then
        the anchor; skip the helper when no task of this process ever mounted a workspace
        this process created (the volume was never made)."""
        name = str((anchor.get("Spec") or {}).get("Name") or "")
        anchor_labels = (anchor.get("Spec") or {}).get("Labels") or {}
        workspace = str(anchor_labels.get(LABEL_WORKSPACE, ""))
        node_id = _anchor_node(anchor)
        with self._lock:
            untouched = name in self._created_here and workspace not in self._used
        if not untouched:
            node = self._poller.nodes().get(node_id)
            if _node_state(node) != "ready":
                raise BackendError(
                    f"cannot remove workspace '{workspace}' on node {_node_name(node, node_id)}"
                    f" now: the node is {_node_state(node) or 'gone'}; `runner gc` removes it "
                    "once the node is back"
                )
            execution = anchor_labels.get(LABEL_EXECUTION)
            argv = ["perl", "-e", REMOVE_SCRIPT, workspace]
            if execution:
                argv.append(f"{LABEL_EXECUTION}={execution}")
            code, output = self._helper_output(
                node_id,
                "remove",
                argv,
                {**labels, **_pick(anchor_labels, LABEL_EXECUTION, LABEL_MANAGED)},
                workspace,
                mounts=[
                    SwarmMount("/var/run/docker.sock", "/var/run/docker.sock", type="bind"),
                ],
                volume=False,
            )
            if code != 0:
                raise BackendError(
                    f"cannot remove workspace '{workspace}' on node "
                    f"{_node_name(node, node_id)}: {output.strip() or f'exit code {code}'}"
                )
        try:
            self._raw.remove_config(str(anchor["ID"]))
        except docker.errors.NotFound:
            pass
        except _ENGINE_ERRORS as exc:
            raise _translate(exc, f"remove workspace '{workspace}'", self._host) from exc
        with self._lock:
            if self._workspace_nodes.get(workspace) == node_id:
                del self._workspace_nodes[workspace]

    def _seed(
        self, workspace: str, node_id: str, archive: bytes, labels: Mapping[str, str]
    ) -> None:
        what = f"copy files into workspace '{workspace}'"
        if not archive:
            return
        if len(archive) > SEED_CONFIGS_MAX_BYTES and self._registry:
            self._seed_through_registry(workspace, node_id, archive, labels, what)
            return
        if len(archive) > SEED_CONFIGS_MAX_BYTES:
            self._log.warning(
                "workspace_seed_through_configs",
                bytes=len(archive),
                advice=f"set {REGISTRY_ENV}: configs this large burden the managers' raft log",
            )
        helper_name = _helper_name("seed")
        config_labels = {**labels, LABEL_OWNER: helper_name}
        configs = []
        try:
            for number, start in enumerate(range(0, len(archive), CONFIG_MAX_BYTES)):
                chunk = archive[start : start + CONFIG_MAX_BYTES]
                config_name = f"{helper_name}-{number:04d}"
                created = self._api.create_config(config_name, chunk, labels=config_labels)
                configs.append(
                    ConfigReference(
                        str(created["ID"]),
                        config_name,
                        filename=f"/runner-seed/{number:04d}",
                        mode=0o444,
                    )
                )
            code, output = self._helper_output(
                node_id,
                "seed",
                ["bash", "-c", SEED_SCRIPT],
                labels,
                workspace,
                configs=configs,
                name=helper_name,
            )
        except _ENGINE_ERRORS as exc:
            raise _translate(exc, what, self._host) from exc
        finally:
            self._remove_configs([c["ConfigID"] for c in configs])
        if code != 0:
            raise BackendError(f"cannot {what}: the helper task said: {output.strip()}")

    def _seed_through_registry(
        self,
        workspace: str,
        node_id: str,
        archive: bytes,
        labels: Mapping[str, str],
        what: str,
    ) -> None:
        """A one-layer image `FROM` the helper image holding the archive, built on the
        manager and pushed to RUNNER_REGISTRY: the node pulls it like any image (TLS and
        credentials as for any pull) and a helper task unpacks it into the volume."""
        context = io.BytesIO()
        dockerfile = f"FROM {self._helper_image}\nCOPY seed.tar /runner-seed.tar\n".encode()
        with tarfile.open(fileobj=context, mode="w") as tar:
            for name, data in (("Dockerfile", dockerfile), ("seed.tar", archive)):
                entry = tarfile.TarInfo(name)
                entry.size = len(data)
                tar.addfile(entry, io.BytesIO(data))
        context.seek(0)
        repository = f"{self._registry}/runner-seed"
        tag = f"{workspace.removeprefix(WORKSPACE_PREFIX)[:64]}-{uuid.uuid4().hex[:8]}"
        image_labels = _pick(labels, LABEL_EXECUTION, LABEL_MANAGED)
        try:
            for event in self._api.build(
                fileobj=context,
                custom_context=True,
                tag=f"{repository}:{tag}",
                rm=True,
                forcerm=True,
                pull=False,
                decode=True,
                labels=image_labels,
            ):
                if "error" in event or "errorDetail" in event:
                    raise BackendError(f"cannot {what}: building the seed image failed: {event}")
        except _ENGINE_ERRORS as exc:
            raise _translate(exc, what, self._host) from exc
        try:
            image = self._push(repository, tag, None)
            code, output = self._helper_output(
                node_id,
                "seed",
                ["bash", "-c", SEED_IMAGE_SCRIPT],
                labels,
                workspace,
                image=image,
            )
        finally:
            with contextlib.suppress(*_ENGINE_ERRORS):
                self._api.remove_image(f"{repository}:{tag}", force=True)
        if code != 0:
            raise BackendError(f"cannot {what}: the helper task said: {output.strip()}")

    def _open_for_all(self, workspace: str, node_id: str, labels: Mapping[str, str]) -> None:
        """Make the workspace's root writable for every user (as /tmp), once: a task with a
        non-root `user:` shares it with the others (the Docker backend does the same)."""
        with self._lock:
            if workspace in self._opened:
                return
        code, output = self._helper_output(
            node_id, "open", ["sh", "-c", OPEN_SCRIPT], labels, workspace
        )
        if code != 0:
            raise BackendError(
                f"cannot make workspace '{workspace}' writable for all: {output.strip()}"
            )
        with self._lock:
            self._opened.add(workspace)

    def _read(
        self, workspace: str, node_id: str, path: str, labels: Mapping[str, str]
    ) -> Iterator[bytes] | None:
        what = f"copy {path or '/workspace'} out of workspace '{workspace}'"
        service_id, followed = self._run_helper(
            node_id,
            "read",
            ["bash", "-c", READ_SCRIPT],
            labels,
            workspace,
            env={"RUNNER_PATH": path, "RUNNER_MAX_BYTES": str(READ_MAX_BYTES)},
            read_only=True,
        )
        try:
            code = self._helper_exit(followed, what)
            if code == READ_MISSING:
                self._remove_service(service_id)
                return None
            if code == READ_TOO_BIG:
                said = self._task_output(followed, streams=(1,)).decode("ascii", "replace")
                size = int(said.strip()) if said.strip().isdigit() else 0
                raise BackendError(
                    f"cannot {what}: it holds {_gib(size)}, over the limit of "
                    f"{_gib(READ_MAX_BYTES)} for one task's artifacts"
                )
            if code != 0:
                errors = self._task_output(followed, streams=(2,)).decode("utf-8", "replace")
                raise BackendError(f"cannot {what}: exit code {code}: {errors.strip()}")
        except BaseException:
            self._remove_service(service_id)
            raise
        return self._decoded(service_id, followed, what)

    def _decoded(self, service_id: str, followed: _Followed, what: str) -> Iterator[bytes]:
        """The helper's base64 output decoded as it arrives; the helper removed at the end
        (also when the reader stops early)."""
        try:
            pending = b""
            assert followed.task_id is not None
            for stream, payload in self._task_frames(followed.task_id, timestamps=False):
                if stream != 1:
                    continue
                pending += payload.replace(b"\n", b"").replace(b"\r", b"")
                usable = len(pending) - len(pending) % 4
                if usable:
                    yield base64.b64decode(pending[:usable])
                    pending = pending[usable:]
            if pending.strip(b"="):
                raise BackendError(f"cannot {what}: the helper's output ends mid-way")
        except _LogsUnavailable as exc:
            raise BackendError(f"cannot {what}: {exc}") from exc
        except _ENGINE_ERRORS as exc:
            raise _translate(exc, what, self._host) from exc
        finally:
            self._remove_service(service_id)

    # -- helper tasks ----------------------------------------------------------------------

    def _run_helper(
        self,
        node_id: str,
        kind: str,
        argv: Sequence[str],
        labels: Mapping[str, str],
        workspace: str,
        *,
        env: Mapping[str, str] | None = None,
        mounts: Sequence[SwarmMount] = (),
        configs: Sequence[ConfigReference] = (),
        read_only: bool = False,
        image: str | None = None,
        name: str | None = None,
        volume: bool = True,
    ) -> tuple[str, _Followed]:
        """Run a helper task on `node_id`, with the workspace's volume at /workspace unless
        `volume` is False; return its service (to read its logs, then remove) once its task
        has ended."""
        name = name or _helper_name(kind)
        volumes = []
        if volume:
            volumes.append(
                SwarmMount(
                    WORKSPACE_PATH,
                    workspace,
                    type="volume",
                    read_only=read_only,
                    labels=_volume_labels(labels, workspace),
                )
            )
        service_labels = {**labels, LABEL_HELPER: kind}
        if workspace:
            service_labels[LABEL_WORKSPACE] = workspace
        template = TaskTemplate(
            SwarmContainerSpec(
                image or self._helper_image,
                command=list(argv),
                env=dict(env or {}),
                mounts=[*volumes, *mounts],
                configs=list(configs) or None,
                labels=service_labels,
            ),
            restart_policy=RestartPolicy(condition="none"),
            placement=Placement(constraints=[f"node.id=={node_id}"]),
            log_driver=DriverConfig("json-file", LOG_OPTIONS),
        )
        if volume:
            with self._lock:
                self._used.add(workspace)
        try:
            created = self._raw.create_service(
                template, name=name, labels=service_labels, mode=ServiceMode("replicated", 1)
            )
        except _ENGINE_ERRORS as exc:
            raise _translate(exc, f"start a {kind} helper task on the Swarm", self._host) from exc
        service_id = str(created["ID"])
        filters = _filters(service_labels, service_id)
        followed = self._poller.follow(service_id, filters, node_id)
        with self._lock:
            self._started[service_id] = _Started(name, filters, node_id, ())
        while not followed.done.wait(1.0):
            pass
        return service_id, followed

    def _helper_output(
        self,
        node_id: str,
        kind: str,
        argv: Sequence[str],
        labels: Mapping[str, str],
        workspace: str,
        **options: Any,
    ) -> tuple[int, str]:
        """Run a helper to its end; its exit code and what it wrote (both streams; only
        read when it failed, unless `kind` is "inspect", whose answer is its output)."""
        service_id, followed = self._run_helper(node_id, kind, argv, labels, workspace, **options)
        try:
            code = self._helper_exit(followed, f"run the {kind} helper task")
            if code == 0 and kind != "inspect":
                return code, ""
            output = self._task_output(followed).decode("utf-8", "replace")
            return code, output
        finally:
            self._remove_service(service_id)

    def _helper_exit(self, followed: _Followed, what: str) -> int:
        try:
            ended = self._exit_of(followed)
        except BackendError as exc:
            hint = ""
            if "No such image" in str(exc):
                hint = f" (set {SWARM_HELPER_IMAGE_ENV} to an image every node can get)"
            raise BackendError(f"cannot {what}: {exc}{hint}") from exc
        return ended.exit_code

    def _task_output(self, followed: _Followed, streams: Sequence[int] = (1, 2)) -> bytes:
        if followed.task_id is None:
            return b""
        try:
            frames = self._task_frames(followed.task_id, timestamps=False)
            return b"".join(payload for stream, payload in frames if stream in streams)
        except _LogsUnavailable as exc:
            return str(exc).encode()
        except _ENGINE_ERRORS as exc:
            raise _translate(exc, "read a helper task's output", self._host) from exc

    # -- tasks -----------------------------------------------------------------------------

    def start(self, spec: ContainerSpec) -> str:
        name = service_name(spec.name)
        pinned: str | None = None
        mounts: list[SwarmMount] = []
        if spec.workspace is not None:
            pinned = self._workspace_node(spec.workspace)
            mounts.append(
                SwarmMount(
                    WORKSPACE_PATH,
                    spec.workspace,
                    type="volume",
                    labels=_volume_labels(spec.labels, spec.workspace),
                )
            )
            with self._lock:
                self._used.add(spec.workspace)
            if spec.user:
                self._open_for_all(
                    spec.workspace,
                    pinned,
                    _pick(spec.labels, LABEL_MANAGED, LABEL_EXECUTION),
                )
        for mount in spec.mounts:
            mounts.append(
                SwarmMount(mount.target, mount.source, type=mount.kind, read_only=mount.read_only)
            )
        networks = _networks(spec)
        constraints = [c.text for c in self._constraints]
        if pinned is not None:
            constraints.append(f"node.id=={pinned}")
        configs = self._file_configs(spec, name)
        resources = None
        if spec.cpus is not None or spec.memory_bytes is not None:
            resources = Resources(
                cpu_limit=None if spec.cpus is None else round(spec.cpus * 1e9),
                mem_limit=spec.memory_bytes,
            )
        template = TaskTemplate(
            SwarmContainerSpec(
                spec.image,
                # Args, not Command: Swarm's Command replaces the image's ENTRYPOINT, its
                # Args are what `docker run IMAGE ARGS` (and the Docker backend) give
                args=list(spec.command) if spec.command is not None else None,
                env=dict(spec.env),
                workdir=spec.working_dir,
                user=spec.user,
                labels=dict(spec.labels),
                mounts=mounts,
                configs=[ref for ref, _ in configs] or None,
                stop_grace_period=round(STOP_GRACE_S * 1e9),
                init=True,
            ),
            resources=resources,
            restart_policy=RestartPolicy(condition="none"),
            placement=Placement(constraints=constraints) if constraints else None,
            log_driver=DriverConfig("json-file", LOG_OPTIONS),
            networks=networks,
        )
        config_ids = tuple(config_id for _, config_id in configs)
        try:
            created = self._raw.create_service(
                template, name=name, labels=dict(spec.labels), mode=ServiceMode("replicated", 1)
            )
        except docker.errors.APIError as exc:
            self._remove_configs(config_ids)
            if exc.status_code == 409:
                raise BackendError(
                    f"cannot create service '{name}': a service with that name already "
                    f"exists; remove it with 'docker service rm {name}'"
                ) from exc
            raise _translate(exc, f"create service '{name}'", self._host) from exc
        except _ENGINE_ERRORS as exc:
            self._remove_configs(config_ids)
            raise _translate(exc, f"create service '{name}'", self._host) from exc
        service_id = str(created["ID"])
        for warning in created.get("Warnings") or ():
            self._log.warning("service_warning", service=name, warning=warning)
        filters = _filters(spec.labels, service_id)
        with self._lock:
            self._started[service_id] = _Started(name, filters, pinned, config_ids)
        self._poller.follow(service_id, filters, pinned)
        return service_id

    def _file_configs(self, spec: ContainerSpec, service: str) -> list[tuple[ConfigReference, str]]:
        """One Swarm config per file of `spec.files`, mounted at the file's path."""
        owner = _numeric_owner(spec.user)
        uid, gid = (str(owner[0]), str(owner[1])) if owner is not None else ("0", "0")
        labels = {**spec.labels, LABEL_OWNER: service}
        made: list[tuple[ConfigReference, str]] = []
        for number, file in enumerate(spec.files):
            if len(file.content) >= CONFIG_MAX_BYTES:
                self._remove_configs([c for _, c in made])
                raise BackendError(
                    f"cannot create service '{service}': {file.path} has "
                    f"{len(file.content)} bytes; a Swarm config (how files reach a task) "
                    f"holds less than {CONFIG_MAX_BYTES}"
                )
            config_name = f"{service[:50]}-f{number}-{uuid.uuid4().hex[:6]}"
            try:
                created = self._api.create_config(config_name, file.content, labels=labels)
            except _ENGINE_ERRORS as exc:
                self._remove_configs([c for _, c in made])
                raise _translate(
                    exc, f"copy {file.path} for service '{service}'", self._host
                ) from exc
            config_id = str(created["ID"])
            made.append(
                (
                    ConfigReference(
                        config_id, config_name, filename=file.path, uid=uid, gid=gid, mode=file.mode
                    ),
                    config_id,
                )
            )
        return made

    def _follow(self, service_id: str) -> _Followed:
        """The poller's record of a service, following it first if this process did not
        start it (an adopted orphan, a `runner kill` of another runner's execution)."""
        followed = self._poller.get(service_id)
        if followed is not None:
            return followed
        with self._lock:
            started = self._started.get(service_id)
        if started is None:
            try:
                service = self._raw.inspect_service(service_id)
            except docker.errors.NotFound as exc:
                raise BackendError(f"service {service_id[:12]} no longer exists") from exc
            except _ENGINE_ERRORS as exc:
                raise _translate(exc, f"inspect service {service_id[:12]}", self._host) from exc
            spec = service.get("Spec") or {}
            placement = (spec.get("TaskTemplate") or {}).get("Placement") or {}
            pinned = next(
                (
                    c.split("==", 1)[1].strip()
                    for c in placement.get("Constraints") or ()
                    if c.replace(" ", "").startswith("node.id==")
                ),
                None,
            )
            started = _Started(
                str(spec.get("Name") or service_id),
                _filters(spec.get("Labels") or {}, service_id),
                pinned,
                (),
            )
            with self._lock:
                self._started[service_id] = started
        return self._poller.follow(service_id, started.filters, started.pinned)

    def logs(self, container_id: str) -> Iterator[LogLine]:
        return _assemble_lines(self._live_frames(self._follow(container_id)))

    def _live_frames(self, followed: _Followed) -> Iterator[tuple[int, bytes]]:
        """Every frame of the task's log once, in order: a follow for live lines, and
        non-follow reads (the authority) when the task has ended or the follow is silent."""
        read = _ReadLog()
        follow: _Follow | None = None
        silent_since = time.monotonic()
        try:
            while True:
                ended = followed.done.is_set()
                task_id = followed.task_id
                since = followed.running_since
                if (
                    follow is None
                    and not ended
                    and task_id is not None
                    and since is not None
                    and time.monotonic() - since >= FOLLOW_AFTER_S
                ):
                    follow = _Follow(self, task_id)
                if ended:
                    break
                if follow is not None:
                    for index, frame in follow.take(timeout=0.1):
                        if index == read.count:
                            read.add(frame)
                            silent_since = time.monotonic()
                            yield frame
                else:
                    self._poller.wait_for_change(0.1)
                if (
                    follow is not None
                    and task_id is not None
                    and time.monotonic() - silent_since > STALL_S
                ):
                    silent_since = time.monotonic()
                    yield from self._catch_up(task_id, read, quiet=True)
            if follow is not None:
                follow.close()
                follow = None
            if followed.task_id is not None and followed.ended in ("final", "lost"):
                yield from self._catch_up(followed.task_id, read, quiet=followed.ended == "lost")
        finally:
            if follow is not None:
                follow.close()

    def _catch_up(
        self, task_id: str, read: _ReadLog, *, quiet: bool
    ) -> Iterator[tuple[int, bytes]]:
        """The frames after those already yielded, from a read that ends: since (a margin
        before) the last one's time, aligned by counting the yielded frames in that window;
        a full read when the window does not line up."""
        try:
            since = read.since()
            frames = self._task_frames(task_id, since_ns=since) if since is not None else None
            window = read.count_since(since) if since is not None else 0
            if frames is None or not read.aligned(frames, window):
                frames, window = self._task_frames(task_id), read.count
            for frame in frames[window:]:
                read.add(frame)
                yield frame
        except _LogsUnavailable as exc:
            # quiet: while the task runs (the next read may succeed), or once its node is
            # lost (the error of the attempt says so)
            if not quiet:
                raise BackendError(f"cannot read the logs of task {task_id[:12]}: {exc}") from exc
        except _ENGINE_ERRORS as exc:
            raise _translate(exc, f"read the logs of task {task_id[:12]}", self._host) from exc

    def _task_frames(
        self, task_id: str, *, since_ns: int | None = None, timestamps: bool = True
    ) -> list[tuple[int, bytes]]:
        """The task's log as stored, in one read that ends (follow=0)."""
        params: dict[str, Any] = {"stdout": 1, "stderr": 1, "timestamps": int(timestamps)}
        if since_ns is not None:
            params["since"] = f"{since_ns // 1_000_000_000}.{since_ns % 1_000_000_000:09d}"
        url = f"{self._api.base_url}/v{self._api.api_version}/tasks/{quote(task_id, safe='')}/logs"
        response = self._api.get(url, params=params, stream=True, timeout=None)
        try:
            _raise_for_status(response)
            return list(_split_frames(_body(response)))
        finally:
            response.close()

    def wait(self, container_id: str) -> ContainerExit:
        followed = self._follow(container_id)
        while not followed.done.wait(1.0):
            pass
        ended = self._exit_of(followed)
        if ended.exit_code == 137 and ended.error and ended.error.startswith(_PROBABLY_OOM):
            # Swarm keeps no OOM flag; the node's engine does, for as long as the task's
            # container exists (until the service is removed): ask it, as Docker would say
            oom = self._oom_killed(followed)
            if oom is not None:
                return ContainerExit(exit_code=137, oom_killed=oom)
        return ended

    def _exit_of(self, followed: _Followed) -> ContainerExit:
        """How the task ended, or BackendError when it never ran to an exit code of its
        own (rejected, never placed, its node lost, its service removed)."""
        task = followed.task or {}
        status = task.get("Status") or {}
        state = str(status.get("State") or "")
        error = str(status.get("Err") or "")
        where = _node_name(self._poller.nodes().get(followed.node_id or ""), followed.node_id)
        if followed.ended == "lost":
            raise BackendError(
                f"{followed.reason}: the task's end is unknown; the lines it wrote until then"
                " are kept"
            )
        if followed.ended != "final":
            raise BackendError(followed.reason or f"the task ended {followed.ended}")
        code = (status.get("ContainerStatus") or {}).get("ExitCode")
        if state == "complete":
            return ContainerExit(exit_code=0)
        if state in UNPLACED_STATES:
            return ContainerExit(exit_code=137, error="stopped before it started")
        if state == "rejected":
            raise BackendError(f"the Swarm rejected the task on node {where}: {error or state}")
        if state in ("failed", "shutdown") and isinstance(code, int):
            own = not error or error.startswith("task: non-zero exit")
            message = None if own else error
            limits = ((task.get("Spec") or {}).get("Resources") or {}).get("Limits") or {}
            memory = limits.get("MemoryBytes")
            if code == 137 and memory and not followed.stopped and state == "failed":
                message = (
                    f"{_PROBABLY_OOM} (limit {_mib(int(memory))}); the node could not be "
                    "asked whether it was"
                )
            return ContainerExit(exit_code=code, error=message)
        raise BackendError(
            f"the task ended {state} on node {where}: {error or status.get('Message') or '?'}"
        )

    def _oom_killed(self, followed: _Followed) -> bool | None:
        """Whether the node's engine says the task's container was OOM-killed (a helper
        task with the node's socket asks it); None when that cannot be learnt."""
        task = followed.task or {}
        container = str(
            ((task.get("Status") or {}).get("ContainerStatus") or {}).get("ContainerID") or ""
        )
        labels = ((task.get("Spec") or {}).get("ContainerSpec") or {}).get("Labels") or {}
        if not container or followed.node_id is None:
            return None
        try:
            code, output = self._helper_output(
                followed.node_id,
                "inspect",
                ["perl", "-e", OOM_SCRIPT, container],
                _pick(labels, LABEL_MANAGED, LABEL_EXECUTION),
                "",
                mounts=[SwarmMount("/var/run/docker.sock", "/var/run/docker.sock", type="bind")],
                volume=False,
            )
        except BackendError as exc:
            self._log.warning("oom_check_failed", error=str(exc))
            return None
        answer = output.strip()
        return answer == "true" if code == 0 and answer in ("true", "false") else None

    def stop(self, container_id: str, grace_s: float) -> None:
        """SIGTERM, SIGKILL after the service's grace period (STOP_GRACE_S: Swarm fixes it
        at creation, `grace_s` cannot change it); returns once the task has ended."""
        followed = self._stop(container_id)
        if followed is not None:
            followed.done.wait(max(grace_s, STOP_GRACE_S) + STOP_WAIT_EXTRA_S)

    def kill(self, container_id: str) -> None:
        self._stop(container_id)

    def _stop(self, service_id: str) -> _Followed | None:
        """Shut the service's task down and keep it listed (with its exit code and logs):
        an update to a constraint no node meets. A scale to 0 would delete the task."""
        try:
            followed = self._follow(service_id)
        except BackendError:
            return None  # gone already
        if followed.done.is_set():
            return followed
        followed.stopped = True
        what = f"stop service {service_id[:12]}"
        for _ in range(5):
            try:
                service = self._raw.inspect_service(service_id)
                template = service["Spec"]["TaskTemplate"]
                placement = template.setdefault("Placement", {})
                constraints = list(placement.get("Constraints") or ())
                if STOP_CONSTRAINT in constraints:
                    return followed
                placement["Constraints"] = [*constraints, STOP_CONSTRAINT]
                self._raw.update_service(
                    service_id,
                    service["Version"]["Index"],
                    task_template=template,
                    fetch_current_spec=True,
                )
                return followed
            except docker.errors.NotFound:
                return followed
            except docker.errors.APIError as exc:
                if "out of sequence" in _explain(exc):
                    continue  # updated meanwhile (a kill and a stop at once): again
                raise _translate(exc, what, self._host) from exc
            except _ENGINE_ERRORS as exc:
                raise _translate(exc, what, self._host) from exc
        return followed

    def node_of(self, container_id: str) -> str | None:
        followed = self._poller.get(container_id)
        node_id = followed.node_id if followed is not None else None
        if followed is None:
            try:
                tasks = self._raw.tasks(filters={"service": container_id})
            except docker.errors.NotFound:
                return None
            except _ENGINE_ERRORS as exc:
                raise _translate(exc, f"find service {container_id[:12]}", self._host) from exc
            if tasks:
                first = min(tasks, key=lambda t: str(t.get("CreatedAt", "")))
                node_id = str(first.get("NodeID") or "") or None
        if node_id is None:
            return None
        nodes = self._poller.nodes()
        if node_id not in nodes:
            nodes = self._poller.nodes(max_age=0)
        return _node_name(nodes.get(node_id), node_id)

    def remove(self, container_id: str) -> None:
        self._remove_service(container_id, strict=True)

    def _remove_service(self, service_id: str, *, strict: bool = False) -> bool:
        """Remove a service, then the configs it mounted; False if it was gone already."""
        self._poller.forget(service_id)
        with self._lock:
            started = self._started.pop(service_id, None)
        name = started.name if started is not None else None
        if name is None:
            with contextlib.suppress(docker.errors.NotFound, *_ENGINE_ERRORS):
                name = str(self._raw.inspect_service(service_id)["Spec"]["Name"])
        removed = True
        try:
            self._raw.remove_service(service_id)
        except docker.errors.NotFound:
            removed = False
        except _ENGINE_ERRORS as exc:
            error = _translate(exc, f"remove service {service_id[:12]}", self._host)
            if strict:
                raise error from exc
            self._log.warning("service_remove_failed", service=service_id[:12], error=str(error))
            return False
        configs = list(started.configs) if started is not None else []
        if name is not None and (started is None or started.configs):
            configs = self._owned_configs(name) or configs
        self._remove_configs(configs)
        return removed

    def _owned_configs(self, service_name: str) -> list[str]:
        try:
            found = self._raw.configs(filters={"label": f"{LABEL_OWNER}={service_name}"})
        except _ENGINE_ERRORS:
            return []
        return [str(c["ID"]) for c in found]

    def _remove_configs(self, config_ids: Sequence[str]) -> None:
        for config_id in config_ids:
            try:
                self._raw.remove_config(config_id)
            except docker.errors.NotFound:
                continue
            except _ENGINE_ERRORS as exc:
                self._log.warning("config_remove_failed", config=config_id, error=str(exc))

    # -- finding what runner left --------------------------------------------------------------

    def _services(self, labels: Mapping[str, str]) -> list[dict[str, Any]]:
        query = {"label": [f"{key}={value}" for key, value in labels.items()]}
        try:
            return list(self._raw.services(filters=query))
        except _ENGINE_ERRORS as exc:
            raise _translate(exc, "list the Swarm's services", self._host) from exc

    def _running_services(self, labels: Mapping[str, str]) -> set[str]:
        """Ids of the services (carrying `labels`) whose first task has not ended."""
        query = {"label": [f"{key}={value}" for key, value in labels.items()]}
        try:
            tasks = self._raw.tasks(filters=query)
        except _ENGINE_ERRORS as exc:
            raise _translate(exc, "list the Swarm's tasks", self._host) from exc
        first: dict[str, dict[str, Any]] = {}
        for task in tasks:
            service = str(task["ServiceID"])
            if service not in first or str(task.get("CreatedAt", "")) < str(
                first[service].get("CreatedAt", "")
            ):
                first[service] = task
        return {
            service
            for service, task in first.items()
            if task["Status"]["State"] not in FINAL_STATES
            and not (
                task["Status"]["State"] in UNPLACED_STATES
                and task.get("DesiredState") in ("shutdown", "remove")
            )
        }

    def find_containers(self, labels: Mapping[str, str]) -> list[ContainerStatus]:
        services = self._services(labels)
        running = self._running_services(labels)
        return [
            ContainerStatus(
                id=str(s["ID"]),
                running=str(s["ID"]) in running,
                labels=(s.get("Spec") or {}).get("Labels") or {},
            )
            for s in services
        ]

    def cleanup(self, labels: Mapping[str, str], *, volumes: bool = True) -> int:
        if not labels:
            raise ValueError("cleanup needs at least one label to select what to remove")
        removed = sum(self._remove_service(str(s["ID"])) for s in self._services(labels))
        query = {"label": [f"{key}={value}" for key, value in labels.items()]}
        try:
            configs = self._raw.configs(filters=query)
        except _ENGINE_ERRORS as exc:
            raise _translate(exc, "list the Swarm's configs", self._host) from exc
        anchors = [c for c in configs if LABEL_WORKSPACE in _config_labels(c)]
        self._remove_configs([str(c["ID"]) for c in configs if c not in anchors])
        if not volumes:
            return removed
        problems = []
        for anchor in anchors:
            try:
                self._remove_anchor(anchor, _pick(_config_labels(anchor), LABEL_MANAGED))
            except BackendError as exc:
                problems.append(str(exc))
                continue
            removed += 1
        if problems:
            raise BackendError("; ".join(problems))
        return removed

    def list_managed(self) -> list[ManagedResource]:
        services = self._services({LABEL_MANAGED: "true"})
        running = self._running_services({LABEL_MANAGED: "true"})
        try:
            configs = self._raw.configs(filters={"label": f"{LABEL_MANAGED}=true"})
        except _ENGINE_ERRORS as exc:
            raise _translate(exc, "list the Swarm's configs", self._host) from exc
        nodes = self._poller.nodes(max_age=0)
        found = [
            ManagedResource(
                kind="container",
                name=str(s["ID"]),
                execution_id=str(
                    ((s.get("Spec") or {}).get("Labels") or {}).get(LABEL_EXECUTION, "")
                ),
                running=str(s["ID"]) in running,
            )
            for s in services
        ]
        names = {str((s.get("Spec") or {}).get("Name")) for s in services}
        for config in configs:
            labels = _config_labels(config)
            execution = str(labels.get(LABEL_EXECUTION, ""))
            if LABEL_WORKSPACE in labels:
                node_id = _anchor_node(config)
                found.append(
                    ManagedResource(
                        kind="volume",
                        name=f"{labels[LABEL_WORKSPACE]}@{_node_name(nodes.get(node_id), node_id)}",
                        execution_id=execution,
                    )
                )
            elif labels.get(LABEL_OWNER) not in names:  # its service is gone: left behind
                config_name = str((config.get("Spec") or {}).get("Name"))
                found.append(
                    ManagedResource(
                        kind="container", name=f"config:{config_name}", execution_id=execution
                    )
                )
        return found

    def remove_managed(self, resource: ManagedResource) -> None:
        if resource.kind == "container" and resource.name.startswith("config:"):
            name = resource.name.removeprefix("config:")
            try:
                self._raw.remove_config(name)
            except docker.errors.NotFound:
                return
            except _ENGINE_ERRORS as exc:
                raise _translate(exc, f"remove config {name}", self._host) from exc
        elif resource.kind == "container":
            self._remove_service(resource.name, strict=True)
        else:
            workspace, _, hostname = resource.name.rpartition("@")
            nodes = self._poller.nodes()
            for anchor in self._anchors(workspace):
                node_id = _anchor_node(anchor)
                if _node_name(nodes.get(node_id), node_id) == hostname:
                    self._remove_anchor(anchor, _pick(_config_labels(anchor), LABEL_MANAGED))

    def close(self) -> None:
        self._poller.close()
        if self._owns_client:
            self._client.close()


class SwarmWorkspace:
    """An execution's workspace on a swarm: a named volume on one node (chosen when it is
    created, recorded in an anchor config), reached through helper tasks on that node."""

    def __init__(self, backend: SwarmBackend, execution_id: str, labels: Mapping[str, str]) -> None:
        self._backend = backend
        self._name = f"{WORKSPACE_PREFIX}{execution_id}"
        self._labels = {
            LABEL_MANAGED: "true",
            LABEL_EXECUTION: label_value(execution_id),
            **labels,
        }

    @property
    def name(self) -> str:
        return self._name

    def create(self) -> None:
        if self._backend._live_node(self._name) is None:
            self._backend._create_anchor(self._name, self._labels)

    def exists(self) -> bool:
        return self._backend._live_node(self._name) is not None

    def seed(self, archive: bytes) -> None:
        node_id = self._backend._workspace_node(self._name)
        self._backend._seed(self._name, node_id, archive, self._labels)

    def read(self, path: str) -> Iterator[bytes] | None:
        node_id = self._backend._workspace_node(self._name)
        return self._backend._read(self._name, node_id, path.strip("/"), self._labels)

    def remove(self) -> None:
        problems = []
        for anchor in self._backend._anchors(self._name):
            try:
                self._backend._remove_anchor(anchor, self._labels)
            except BackendError as exc:
                problems.append(str(exc))
        if problems:
            raise BackendError("; ".join(problems))


# -- logs --------------------------------------------------------------------------------------


class _LogsUnavailable(Exception):
    """The manager answered a log read with an error frame (stream 3): typically the task's
    node is not available (moby#37336)."""


class _ReadLog:
    """The frames yielded so far: their number, and the times of the recent ones (to line
    a non-follow read up with them)."""

    def __init__(self) -> None:
        self.count = 0
        self._times: list[int] = []
        self._last: tuple[int, bytes] | None = None

    def add(self, frame: tuple[int, bytes]) -> None:
        self.count += 1
        self._times.append(_frame_ns(frame[1]))
        self._last = frame

    def since(self) -> int | None:
        return self._times[-1] - CATCH_UP_MARGIN_NS if self._times else None

    def count_since(self, since: int) -> int:
        """How many yielded frames a read `since` returns again: those at or after it
        (scanning back past it by another margin, for times out of order)."""
        found = 0
        for stamp in reversed(self._times):
            if stamp >= since:
                found += 1
            elif stamp < since - CATCH_UP_MARGIN_NS:
                break
        return found

    def aligned(self, frames: list[tuple[int, bytes]], window: int) -> bool:
        """Whether the read's first `window` frames end with the last frame yielded."""
        if window == 0:
            return self._last is None
        return window <= len(frames) and frames[window - 1] == self._last


class _Follow:
    """A `follow=1` read of a task's log in a thread of its own; its frames numbered from
    0 (the log's first frame: no `since`), taken in batches. Closed by shutting its socket
    down, since the stream does not end when the task does.

    Only the reader thread closes the response: closing it also hands its connection back
    to the client's pool, and a second close from another thread could hand the same
    connection back twice, so that two later requests share it (http.client's
    ResponseNotReady). The closer only shuts down the socket captured while the reader
    held it, never whatever socket the pooled connection holds by then."""

    def __init__(self, backend: SwarmBackend, task_id: str) -> None:
        self._queue: queue.Queue[tuple[int, tuple[int, bytes]] | None] = queue.Queue()
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._closed = False
        self._ended = False
        api = backend._api
        self._url = f"{api.base_url}/v{api.api_version}/tasks/{quote(task_id, safe='')}/logs"
        self._api = api
        self._thread = threading.Thread(target=self._read, name="swarm-follow", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        params = {"stdout": 1, "stderr": 1, "timestamps": 1, "follow": 1}
        index = 0
        response: requests.Response | None = None
        try:
            response = self._api.get(self._url, params=params, stream=True, timeout=None)
            with self._lock:
                if self._closed:
                    return
                self._sock = _socket_of(response)
            _raise_for_status(response)
            for frame in _split_frames(_body(response)):
                if frame[0] == _SYSTEM_ERROR_STREAM:
                    break
                self._queue.put((index, frame))
                index += 1
        except Exception:  # a severed or failed follow: the non-follow reads make up for it
            pass
        finally:
            with self._lock:
                self._sock = None
            self._queue.put(None)
            if response is not None:
                with contextlib.suppress(Exception):
                    response.close()

    def take(self, timeout: float) -> list[tuple[int, tuple[int, bytes]]]:
        """The frames that arrived, waiting up to `timeout` for the first."""
        if self._ended:
            time.sleep(timeout)
            return []
        taken: list[tuple[int, tuple[int, bytes]]] = []
        try:
            item = self._queue.get(timeout=timeout)
            while True:
                if item is None:
                    self._ended = True
                    break
                taken.append(item)
                item = self._queue.get_nowait()
        except queue.Empty:
            pass
        return taken

    def close(self) -> None:
        with self._lock:
            self._closed = True
            # under the lock: the reader cannot have closed the response (and pooled its
            # connection) in between, so this socket is still the follow's own
            if self._sock is not None:
                with contextlib.suppress(OSError):
                    self._sock.shutdown(socket.SHUT_RDWR)
        self._thread.join(timeout=5)


def _socket_of(response: requests.Response) -> socket.socket | None:
    """The socket under a streamed response (shutting it down wakes a thread blocked on
    it; closing the response alone does not)."""
    raw = response.raw
    candidates = [
        getattr(getattr(raw, "_connection", None), "sock", None),
        getattr(
            getattr(getattr(getattr(raw, "_fp", None), "fp", None), "raw", None), "_sock", None
        ),
    ]
    return next((sock for sock in candidates if isinstance(sock, socket.socket)), None)


def _split_frames(body: _Chunks) -> Iterator[tuple[int, bytes]]:
    """The multiplexed log stream as (stream, payload) frames; a stream 3 frame (the
    manager's own error) raises _LogsUnavailable."""
    unpack_header = _FRAME_HEADER.unpack_from
    buffer = b""
    while chunk := body.read1(LOG_READ_SIZE):
        buffer = buffer + chunk if buffer else chunk
        end = len(buffer)
        position = 0
        while end - position >= 8:
            stream_number, size = unpack_header(buffer, position)
            stop = position + 8 + size
            if stop > end:
                break
            frame = buffer[position + 8 : stop]
            position = stop
            if stream_number == _SYSTEM_ERROR_STREAM:
                raise _LogsUnavailable(" ".join(frame.decode("utf-8", "replace").split()))
            if stream_number in _OUTPUT_STREAMS:
                yield stream_number, frame
        buffer = buffer[position:]


def _frame_ns(payload: bytes) -> int:
    """Nanoseconds since the epoch of a timestamped frame (`2026-01-02T03:04:05.123456789Z
    text`); 0 when it has none."""
    stamp = payload[: payload.find(b" ")].decode("ascii", "replace")
    head, _, fraction = stamp.partition(".")
    digits = "".join(ch for ch in fraction if ch.isdigit())
    try:
        seconds = datetime.fromisoformat(head).replace(tzinfo=UTC).timestamp()
    except ValueError:
        return 0
    return int(seconds) * 1_000_000_000 + int((digits + "000000000")[:9])


# -- small pieces --------------------------------------------------------------------------------


def service_name(container_name: str) -> str:
    """A container name made a valid service name: letters, digits and dashes, at most 63
    characters, keeping its unique end (`-TASKRUNID`)."""
    safe = _SERVICE_NAME_UNSAFE.sub("-", container_name).strip("-") or "task"
    if len(safe) <= _SERVICE_NAME_MAX:
        return safe
    head, _, tail = safe.rpartition("-")
    keep = _SERVICE_NAME_MAX - len(tail) - 1
    return f"{head[:keep].rstrip('-')}-{tail}" if head and keep > 8 else safe[:_SERVICE_NAME_MAX]


def _helper_name(kind: str) -> str:
    return f"runner-helper-{kind}-{uuid.uuid4().hex[:12]}"


def _filters(labels: Mapping[str, str], service_id: str) -> tuple[tuple[str, str], ...]:
    """What the poller asks the tasks of this service with: its execution's label (one call
    for every task of an execution), else its id."""
    execution = labels.get(LABEL_EXECUTION)
    if execution:
        return (("label", f"{LABEL_EXECUTION}={execution}"),)
    return (("service", service_id),)


def _networks(spec: ContainerSpec) -> list[NetworkAttachmentConfig] | None:
    if spec.network in (None, "bridge", "default"):
        return None  # a task without networks is on its node's bridge, as a container
    if spec.network == "none":
        raise BackendError(
            f"cannot create service for '{spec.name}': network 'none' is not available to "
            "Swarm services (Docker 20.10 knows only 'host', 'bridge' and swarm networks)"
        )
    return [NetworkAttachmentConfig(spec.network)]


def _volume_labels(labels: Mapping[str, str], workspace: str) -> dict[str, str]:
    return {**_pick(labels, LABEL_MANAGED, LABEL_EXECUTION), LABEL_WORKSPACE: workspace}


def _pick(labels: Mapping[str, str], *keys: str) -> dict[str, str]:
    return {key: labels[key] for key in keys if key in labels}


def _config_labels(config: Mapping[str, Any]) -> dict[str, str]:
    return dict((config.get("Spec") or {}).get("Labels") or {})


def _anchor_node(anchor: Mapping[str, Any]) -> str:
    return str(_config_labels(anchor).get(LABEL_NODE, ""))


def _mib(size: int) -> str:
    return f"{size / 1024 / 1024:g}MiB"


def _gib(size: int) -> str:
    return f"{size / 1024**3:.1f} GiB"


__all__ = [
    "SwarmBackend",
    "SwarmWorkspace",
    "parse_constraints",
    "service_name",
]
