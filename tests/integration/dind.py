"""A Docker-in-Docker engine for the integration tests: a daemon that cannot see this
machine's disk, which is how CI users run `runner` (DOCKER_HOST pointing at a dind service).

`dind_engine(outer)` builds images/dind as runner-test/dind:latest on the local engine (the
layer cache makes a rebuild take a second), starts it, waits until the inner engine answers,
copies images into it (nothing can be pulled where no registry is reachable) and yields a
`DindEngine` whose `url` is `tcp://127.0.0.1:PORT`. On exit it stops the container, which
stops the inner engine's containers, and removes the container and its volume.

Starting: `--privileged` first, as on an ordinary machine. Where the runtime refuses it
("unable to apply caps": the host's capability bounding set lacks CAP_SYS_RESOURCE, as in
some sandboxed VMs), the container is started again with every capability but that one,
no seccomp/AppArmor confinement, unmasked /proc and /sys paths, access to all devices and
the host's cgroup tree mounted read-write; the inner engine then puts its containers
under a cgroup parent of its own (/NAME-OF-THE-CONTAINER) instead of the host engine's
/docker.

The outer engine must run on this machine: the inner one is reached on 127.0.0.1.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import Any

import docker
import docker.errors
import requests

from tests.integration.helpers import REPO

DIND_IMAGE = "runner-test/dind:latest"
DIND_CONTEXT = REPO / "images" / "dind"
DIND_PORT = "2375/tcp"
TEST_LABEL = "io.runner.test"
"""Set to "dind" on the container and the volume, to find what a killed session left:
`docker rm -f $(docker ps -aq -f label=io.runner.test=dind)`, then the same for volumes."""
PING_TIMEOUT_S = 60.0
CLIENT_TIMEOUT_S = 300  # a docker load or build may take long on a slow machine
STOP_TIMEOUT_S = 20
LOG_TAIL = 40

# What replaces --privileged where the runtime refuses it (see the module docstring).
FALLBACK_OPTIONS: dict[str, Any] = {
    "cap_add": ["ALL"],
    "cap_drop": ["SYS_RESOURCE"],
    "security_opt": [
        "seccomp=unconfined",
        "apparmor=unconfined",
        # and systempaths=unconfined, which _create_and_start sets by hand
    ],
    "device_cgroup_rules": ["a *:* rwm"],
}


class DindError(RuntimeError):
    """The Docker-in-Docker engine could not be built, started or filled with images."""


@dataclass(frozen=True)
class DindEngine:
    """A running inner engine: where to reach it, how it was started, how long it took."""

    url: str
    client: docker.DockerClient
    container: Any  # docker.models.containers.Container of the outer engine
    mode: str  # "privileged" or "fallback"
    storage_driver: str
    timings: dict[str, float] = field(default_factory=dict)

    def summary(self) -> str:
        times = ", ".join(f"{name} {seconds:.1f}s" for name, seconds in self.timings.items())
        return f"dind {self.url}: {self.mode}, storage driver {self.storage_driver}; {times}"


@contextmanager
def dind_engine(outer: docker.DockerClient, images: Sequence[str] = ()) -> Iterator[DindEngine]:
    """Build, start and fill a dind engine on `outer`; remove it and its volume on exit."""
    timings: dict[str, float] = {}
    started = time.monotonic()
    build_image(outer)
    timings["build"] = time.monotonic() - started

    started = time.monotonic()
    engine = launch(outer, f"runner-test-dind-{uuid.uuid4().hex[:12]}", {TEST_LABEL: "dind"})
    try:
        timings["start_to_ping"] = time.monotonic() - started
        started = time.monotonic()
        for reference in images:
            load_image(outer, engine.client, reference)
        timings["load_images"] = time.monotonic() - started
        yield DindEngine(
            url=engine.url,
            client=engine.client,
            container=engine.container,
            mode=engine.mode,
            storage_driver=str(engine.client.info().get("Driver", "?")),
            timings=timings,
        )
    finally:
        engine.discard()


@dataclass
class Launched:
    """A dind container whose engine answers, with the volume under its /var/lib/docker.
    `url` and `client` change when the container is started again (`restart`): the port
    published on 127.0.0.1 is a new one."""

    container: Any  # docker.models.containers.Container of the outer engine
    volume: Any  # docker.models.volumes.Volume of the outer engine
    mode: str  # "privileged" or "fallback"
    url: str
    client: docker.DockerClient

    def restart(self) -> None:
        """Start the (stopped or killed) container again and wait for its engine."""
        self.client.close()
        self.container.start()
        self.url = f"tcp://127.0.0.1:{published_port(self.container)}"
        self.client = wait_for_engine(self.url, self.container)

    def discard(self) -> None:
        """Close the client, remove the container, then its volume; never raises for what
        is already gone."""
        self.client.close()
        remove_container(self.container)
        with suppress(docker.errors.NotFound):
            self.volume.remove(force=True)


def launch(
    outer: docker.DockerClient,
    name: str,
    labels: dict[str, str],
    *,
    network: str | None = None,
    hostname: str | None = None,
    binds: Sequence[str] = (),
) -> Launched:
    """Start a dind container `name` (image already built) with a new volume of the same
    name, optionally on a user `network` under `hostname` and with more `binds`, and wait
    for its engine; on any failure remove what was created and raise DindError."""
    volume = outer.volumes.create(name, labels=labels)
    container = None
    try:
        container, mode = start_container(
            outer, name, volume.name, labels, network=network, hostname=hostname, binds=binds
        )
        url = f"tcp://127.0.0.1:{published_port(container)}"
        client = wait_for_engine(url, container)
    except BaseException:
        if container is not None:
            remove_container(container)
        volume.remove(force=True)
        raise
    return Launched(container=container, volume=volume, mode=mode, url=url, client=client)


def build_image(outer: docker.DockerClient) -> None:
    """(Re)build runner-test/dind from images/dind; cached layers make a rebuild cheap.
    The SDK uses the legacy builder, which takes the imported base image as it is."""
    try:
        outer.images.build(
            path=str(DIND_CONTEXT), tag=DIND_IMAGE, rm=True, forcerm=True, pull=False
        )
    except docker.errors.BuildError as exc:
        output = "".join(str(chunk.get("stream", "")) for chunk in exc.build_log)
        raise DindError(f"cannot build {DIND_IMAGE} from {DIND_CONTEXT}: {exc}\n{output}") from exc


def start_container(
    outer: docker.DockerClient,
    name: str,
    volume: str,
    labels: dict[str, str],
    *,
    network: str | None = None,
    hostname: str | None = None,
    binds: Sequence[str] = (),
) -> tuple[Any, str]:
    """Start the dind container privileged, or with the fallback options where the runtime
    refuses --privileged; return it and which of the two worked."""
    data = [f"{volume}:/var/lib/docker:rw", *binds]
    where = {"network": network, "hostname": hostname}
    try:
        container = _create_and_start(outer, name, labels, privileged=True, binds=data, **where)
        return container, "privileged"
    except docker.errors.APIError as exc:
        privileged_error = docker_reason(exc)
    # Any refusal falls back: the caps error is the known one, and should the fallback fail
    # too, both reasons are in the message.
    try:
        cgroups = [*data, "/sys/fs/cgroup:/sys/fs/cgroup:rw"]
        container = _create_and_start(
            outer, name, labels, binds=cgroups, **where, **FALLBACK_OPTIONS
        )
        return container, "fallback"
    except docker.errors.APIError as exc:
        raise DindError(
            f"cannot start {DIND_IMAGE}: with --privileged: {privileged_error}; "
            f"with the fallback options {FALLBACK_OPTIONS}: {docker_reason(exc)}"
        ) from exc


def _create_and_start(
    outer: docker.DockerClient,
    name: str,
    labels: dict[str, str],
    *,
    network: str | None = None,
    hostname: str | None = None,
    **host_options: Any,
) -> Any:
    """Create and start; a container that fails to start is removed, so the name is free."""
    host_config = outer.api.create_host_config(
        # No TLS on 2375: only this machine may reach it.
        port_bindings={DIND_PORT: ("127.0.0.1", None)},
        network_mode=network,
        **host_options,
    )
    if not host_options.get("privileged"):
        # What `docker run --security-opt systempaths=unconfined` sends (the CLI translates
        # it; the engine does not take it as a security option and the SDK has no argument):
        # /proc and /sys paths neither masked nor read-only, so dockerd can set sysctls.
        host_config["MaskedPaths"] = []
        host_config["ReadonlyPaths"] = []
    created = outer.api.create_container(
        DIND_IMAGE,
        name=name,
        labels=labels,
        # Its own cgroup parent: in fallback mode the host's cgroup tree is shared with the
        # host engine and with any other dind engine running at the same time.
        environment={"DIND_CGROUP_PARENT": f"/{name}"},
        ports=[DIND_PORT],
        host_config=host_config,
        hostname=hostname,
        networking_config=(
            # The stubs type the argument as one EndpointConfig; the engine (and docker-py)
            # take a mapping network -> endpoint.
            outer.api.create_networking_config({network: outer.api.create_endpoint_config()})  # type: ignore[arg-type]
            if network
            else None
        ),
    )
    container = outer.containers.get(created["Id"])
    try:
        container.start()
    except docker.errors.APIError:
        with suppress(docker.errors.APIError):
            container.remove(force=True)
        raise
    return container


def published_port(container: Any) -> str:
    container.reload()
    bindings = container.attrs["NetworkSettings"]["Ports"].get(DIND_PORT) or []
    if not bindings:
        raise DindError(f"container {container.name} publishes no port for {DIND_PORT}")
    return str(bindings[0]["HostPort"])


def wait_for_engine(url: str, container: Any) -> docker.DockerClient:
    """Wait until the inner engine answers, at most PING_TIMEOUT_S seconds; return a client.
    (The client asks the engine for its API version as it is made, so it is made in the loop.)"""
    deadline = time.monotonic() + PING_TIMEOUT_S
    last_error = "no answer yet"
    while True:
        client = None
        try:
            client = docker.DockerClient(base_url=url, timeout=CLIENT_TIMEOUT_S)
            if client.ping():
                return client
        except (docker.errors.DockerException, requests.RequestException) as exc:
            last_error = str(exc)  # refused or reset until dockerd listens
        if client is not None:
            client.close()
        container.reload()
        if container.status not in ("created", "running"):
            raise DindError(
                f"the dind container {container.name} stopped ({container.status}) before "
                f"its engine answered at {url}; its last log lines:\n{container_logs(container)}"
            )
        if time.monotonic() > deadline:
            raise DindError(
                f"the engine in {container.name} did not answer at {url} within "
                f"{PING_TIMEOUT_S:.0f}s ({last_error}); its last log lines:\n"
                f"{container_logs(container)}"
            )
        time.sleep(0.25)


def load_image(outer: docker.DockerClient, inner: docker.DockerClient, reference: str) -> None:
    """Stream `docker save` of the outer engine into `docker load` of the inner one."""
    try:
        image = outer.images.get(reference)
    except docker.errors.ImageNotFound as exc:
        raise DindError(
            f"image {reference} is not on the outer engine (see .ci/prepare.sh)"
        ) from exc
    # save(named=tag) keeps the repository:tag in the archive, so it loads under its name.
    tag = reference if ":" in reference.rsplit("/", 1)[-1] else f"{reference}:latest"
    archive = image.save(named=tag if tag in image.tags else True)
    # A stream, never the whole archive in memory: requests sends an iterable body chunked.
    inner.images.load(archive)  # type: ignore[arg-type]  # the stub only admits bytes
    try:
        inner.images.get(reference)
    except docker.errors.ImageNotFound as exc:
        raise DindError(
            f"image {reference} was loaded but the inner engine does not list it"
        ) from exc


def remove_container(container: Any) -> None:
    """Stop first, so the inner engine stops its containers and drops their cgroups (the
    host's, in fallback mode), then remove the container and its anonymous volumes."""
    with suppress(docker.errors.APIError):
        container.stop(timeout=STOP_TIMEOUT_S)
    with suppress(docker.errors.NotFound):
        container.remove(v=True, force=True)


def container_logs(container: Any) -> str:
    try:
        return str(container.logs(tail=LOG_TAIL).decode(errors="replace"))
    except docker.errors.APIError as exc:
        return f"(no logs: {exc})"


def docker_reason(exc: docker.errors.APIError) -> str:
    return str(exc.explanation or exc)
