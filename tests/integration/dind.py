"""A Docker-in-Docker engine for the integration tests: a daemon that cannot see this
machine's disk, which is how CI users run `runner` (DOCKER_HOST pointing at a dind service).

`dind_engine(outer)` builds images/dind as runner-test/dind:latest on the local engine (the
layer cache makes a rebuild take a second), starts it, waits until the inner engine answers,
copies images into it (nothing can be pulled where no registry is reachable) and yields a
`DindEngine` whose `url` is `tcp://127.0.0.1:PORT`. On exit it stops the container, which
stops the inner engine's containers, and removes the container and its volume.

With `tls_dir`, the engine works as GitLab CI's `docker:dind` service: it makes its own CA
and certificates in a `certs` volume (DOCKER_TLS_CERTDIR=/certs) and listens with TLS on
2376; the client files (ca.pem, cert.pem, key.pem) are copied to `tls_dir`. With
`network`, it is also on that user network under the name `docker`, as a CI service is.

Containers are started from the image id the build returned, not from the tag: other
test sessions on the same engine may rebuild the tag from another checkout meanwhile.

`launch(outer, name, labels, ...)` is the lower step both `dind_engine` and the test swarm
(tests/integration/swarm.py) use: one container with its storage volume (and with TLS its
certs volume) whose engine answers, as a `Launched` that can be started again after a kill
(`restart`: a new port) and removed with its volumes (`discard`).

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

import io
import tarfile
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import docker.errors
import requests
from docker.tls import TLSConfig

from runner.backends.docker_connection import EngineClient
from tests.integration.helpers import REPO

DIND_IMAGE = "runner-test/dind:latest"
DIND_CONTEXT = REPO / "images" / "dind"
DIND_PORT = "2375/tcp"
DIND_TLS_PORT = "2376/tcp"
CERTS_DIR = "/certs"  # DOCKER_TLS_CERTDIR in the container, as GitLab CI sets it
SERVICE_ALIAS = "docker"  # the name a CI job reaches its dind service by
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
    certs_volume: str | None = None  # with TLS: the volume holding ca/, server/, client/
    tls_dir: Path | None = None  # with TLS: a copy of client/ (ca.pem, cert.pem, key.pem)

    def summary(self) -> str:
        times = ", ".join(f"{name} {seconds:.1f}s" for name, seconds in self.timings.items())
        return f"dind {self.url}: {self.mode}, storage driver {self.storage_driver}; {times}"


@contextmanager
def dind_engine(
    outer: docker.DockerClient,
    images: Sequence[str] = (),
    *,
    tls_dir: Path | None = None,
    network: str | None = None,
) -> Iterator[DindEngine]:
    """Build, start and fill a dind engine on `outer`; remove it and its volumes on exit."""
    timings: dict[str, float] = {}
    started = time.monotonic()
    image = build_image(outer)
    timings["build"] = time.monotonic() - started

    started = time.monotonic()
    engine = launch(
        outer,
        f"runner-test-dind-{uuid.uuid4().hex[:12]}",
        {TEST_LABEL: "dind"},
        image=image,
        network=network,
        aliases=(SERVICE_ALIAS,),
        tls_dir=tls_dir,
    )
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
            certs_volume=engine.certs_volume.name if engine.certs_volume is not None else None,
            tls_dir=tls_dir,
        )
    finally:
        engine.discard()


@dataclass
class Launched:
    """A dind container whose engine answers, with the volume under its /var/lib/docker
    (and with TLS the certs volume). `url` and `client` change when the container is
    started again (`restart`): the port published on 127.0.0.1 is a new one."""

    container: Any  # docker.models.containers.Container of the outer engine
    volume: Any  # docker.models.volumes.Volume of the outer engine
    mode: str  # "privileged" or "fallback"
    url: str
    client: docker.DockerClient
    certs_volume: Any = None  # with TLS: docker.models.volumes.Volume holding ca/, server/, client/
    tls: TLSConfig | None = None  # with TLS: how the client reaches the engine

    def restart(self) -> None:
        """Start the (stopped or killed) container again and wait for its engine."""
        self.client.close()
        self.container.start()
        port = DIND_TLS_PORT if self.tls is not None else DIND_PORT
        self.url = f"tcp://127.0.0.1:{published_port(self.container, port)}"
        self.client = wait_for_engine(self.url, self.container, tls=self.tls)

    def discard(self) -> None:
        """Close the client, remove the container, then its volumes; never raises for what
        is already gone."""
        self.client.close()
        remove_container(self.container)
        for volume in (self.volume, self.certs_volume):
            if volume is not None:
                with suppress(docker.errors.NotFound):
                    volume.remove(force=True)


def launch(
    outer: docker.DockerClient,
    name: str,
    labels: dict[str, str],
    *,
    image: str = DIND_IMAGE,
    network: str | None = None,
    aliases: Sequence[str] = (),
    hostname: str | None = None,
    binds: Sequence[str] = (),
    tls_dir: Path | None = None,
) -> Launched:
    """Start a dind container `name` (`image` already built) with a new volume of the same
    name, optionally on a user `network` (known there by `aliases` besides its name) under
    `hostname`, with more `binds`, and with `tls_dir` as GitLab's docker:dind (the client
    files copied there); wait for its engine. On any failure remove what was created."""
    volume = outer.volumes.create(name, labels=labels)
    certs = outer.volumes.create(f"{name}-certs", labels=labels) if tls_dir else None
    container = None
    try:
        container, mode = start_container(
            outer,
            name,
            volume.name,
            labels,
            image=image,
            certs_volume=certs.name if certs is not None else None,
            network=network,
            aliases=aliases,
            hostname=hostname,
            binds=binds,
        )
        tls = None
        if tls_dir is not None:
            url = f"tcp://127.0.0.1:{published_port(container, DIND_TLS_PORT)}"
            tls = copy_client_certs(container, tls_dir)
        else:
            url = f"tcp://127.0.0.1:{published_port(container)}"
        client = wait_for_engine(url, container, tls=tls)
    except BaseException:
        if container is not None:
            remove_container(container)
        volume.remove(force=True)
        if certs is not None:
            certs.remove(force=True)
        raise
    return Launched(
        container=container,
        volume=volume,
        mode=mode,
        url=url,
        client=client,
        certs_volume=certs,
        tls=tls,
    )


def build_image(outer: docker.DockerClient) -> str:
    """(Re)build runner-test/dind from images/dind; cached layers make a rebuild cheap.
    The SDK uses the legacy builder, which takes the imported base image as it is.
    Returns the image id, which is what containers are started from."""
    try:
        image, _ = outer.images.build(
            path=str(DIND_CONTEXT), tag=DIND_IMAGE, rm=True, forcerm=True, pull=False
        )
    except docker.errors.BuildError as exc:
        output = "".join(str(chunk.get("stream", "")) for chunk in exc.build_log)
        raise DindError(f"cannot build {DIND_IMAGE} from {DIND_CONTEXT}: {exc}\n{output}") from exc
    return str(image.id)


def start_container(
    outer: docker.DockerClient,
    name: str,
    volume: str,
    labels: dict[str, str],
    *,
    image: str = DIND_IMAGE,
    certs_volume: str | None = None,
    network: str | None = None,
    aliases: Sequence[str] = (SERVICE_ALIAS,),
    hostname: str | None = None,
    binds: Sequence[str] = (),
    start: bool = True,
    mode: str | None = None,
) -> tuple[Any, str]:
    """Start the dind container privileged, or with the fallback options where the runtime
    refuses --privileged; return it and which of the two worked. `certs_volume`: TLS as
    GitLab's docker:dind (see the module docstring); `network`: also on that network, known
    there by its name and `aliases` (by default `docker`, as a CI service); `hostname`: the
    container's (and so the engine's) host name; `binds`: more volumes or folders;
    `start=False`: only create it (a test starts it later), in `mode` ("privileged" or
    "fallback": what an earlier start returned), which must then work."""
    data = [f"{volume}:/var/lib/docker:rw", *binds]
    if certs_volume is not None:
        data.append(f"{certs_volume}:{CERTS_DIR}:rw")
    options: dict[str, Any] = {
        "image": image,
        "certs": certs_volume is not None,
        "network": network,
        "aliases": aliases,
        "hostname": hostname,
    }
    if mode == "fallback":
        binds = [*data, "/sys/fs/cgroup:/sys/fs/cgroup:rw"]
        container = _create_and_start(
            outer, name, labels, binds=binds, start=start, **options, **FALLBACK_OPTIONS
        )
        return container, "fallback"
    try:
        container = _create_and_start(
            outer, name, labels, privileged=True, binds=data, start=start, **options
        )
        return container, "privileged"
    except docker.errors.APIError as exc:
        privileged_error = docker_reason(exc)
    # Any refusal falls back: the caps error is the known one, and should the fallback fail
    # too, both reasons are in the message.
    try:
        binds = [*data, "/sys/fs/cgroup:/sys/fs/cgroup:rw"]
        container = _create_and_start(
            outer, name, labels, binds=binds, start=start, **options, **FALLBACK_OPTIONS
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
    image: str,
    certs: bool,
    network: str | None,
    aliases: Sequence[str],
    hostname: str | None,
    start: bool,
    **host_options: Any,
) -> Any:
    """Create and start; a container that fails to start is removed, so the name is free."""
    port = DIND_TLS_PORT if certs else DIND_PORT
    host_config = outer.api.create_host_config(
        # Without TLS (2375) only this machine may reach it.
        port_bindings={port: ("127.0.0.1", None)},
        # as `docker run --network` sends it: the mode names the network the endpoint
        # configuration below is for
        network_mode=network,
        **host_options,
    )
    if not host_options.get("privileged"):
        # What `docker run --security-opt systempaths=unconfined` sends (the CLI translates
        # it; the engine does not take it as a security option and the SDK has no argument):
        # /proc and /sys paths neither masked nor read-only, so dockerd can set sysctls.
        host_config["MaskedPaths"] = []
        host_config["ReadonlyPaths"] = []
    # Its own cgroup parent: in fallback mode the host's cgroup tree is shared with the
    # host engine and with any other dind engine running at the same time.
    environment = {"DIND_CGROUP_PARENT": f"/{name}"}
    if certs:
        environment["DOCKER_TLS_CERTDIR"] = CERTS_DIR
    networking = None
    if network is not None:
        endpoints = {network: outer.api.create_endpoint_config(aliases=list(aliases) or None)}
        # the stub wants one EndpointConfig; the engine (and docker-py) take name -> config
        networking = outer.api.create_networking_config(endpoints)  # type: ignore[arg-type]
    created = outer.api.create_container(
        image,
        name=name,
        labels=labels,
        environment=environment,
        ports=[port],
        host_config=host_config,
        hostname=hostname,
        networking_config=networking,
    )
    container = outer.containers.get(created["Id"])
    if not start:
        return container
    try:
        container.start()
    except docker.errors.APIError:
        with suppress(docker.errors.APIError):
            container.remove(force=True)
        raise
    return container


def published_port(container: Any, port: str = DIND_PORT) -> str:
    container.reload()
    bindings = container.attrs["NetworkSettings"]["Ports"].get(port) or []
    if not bindings:
        raise DindError(f"container {container.name} publishes no port for {port}")
    return str(bindings[0]["HostPort"])


def copy_client_certs(container: Any, destination: Path) -> TLSConfig:
    """Wait until the engine has written its client files, copy them to `destination` and
    return the TLS settings of a client using them."""
    deadline = time.monotonic() + PING_TIMEOUT_S
    while True:
        found = container.exec_run(["test", "-s", f"{CERTS_DIR}/client/key.pem"])
        if found.exit_code == 0:
            break
        container.reload()
        if container.status != "running" or time.monotonic() > deadline:
            raise DindError(
                f"the dind container {container.name} wrote no {CERTS_DIR}/client/key.pem "
                f"({container.status}); its last log lines:\n{container_logs(container)}"
            )
        time.sleep(0.25)
    stream, _ = container.get_archive(f"{CERTS_DIR}/client")
    destination.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as archive:
        for member in archive.getmembers():
            if member.isfile() and member.name.endswith(".pem"):
                extracted = archive.extractfile(member)
                assert extracted is not None
                (destination / Path(member.name).name).write_bytes(extracted.read())
    return TLSConfig(
        client_cert=(str(destination / "cert.pem"), str(destination / "key.pem")),
        ca_cert=str(destination / "ca.pem"),
        verify=True,
    )


def wait_for_engine(url: str, container: Any, tls: TLSConfig | None = None) -> docker.DockerClient:
    """Wait until the inner engine answers, at most PING_TIMEOUT_S seconds; return a client.
    (The client asks the engine for its API version as it is made, so it is made in the loop.)"""
    deadline = time.monotonic() + PING_TIMEOUT_S
    last_error = "no answer yet"
    while True:
        client = None
        try:
            # EngineClient: REQUESTS_CA_BUNDLE (set on machines behind a TLS-inspecting
            # proxy) must not replace the engine's CA
            client = EngineClient(
                base_url=url, timeout=CLIENT_TIMEOUT_S, tls=tls if tls is not None else False
            )
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
