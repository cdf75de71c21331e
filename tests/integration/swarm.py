"""A three-node Docker Swarm on this machine, for the Swarm backend's tests and benchmarks.

`swarm_cluster(outer)` starts three runner-test/dind engines (images/dind, started as
`dind.launch` starts them: `--privileged`, else the fallback flags) on one user network of
the outer engine, makes the first a manager (`swarm init`) and joins the two others as
workers, loads images into all three (`docker save | docker load`: nothing can be pulled
here), and runs a registry (images/registry, Debian's docker-registry) as a GLOBAL service
publishing port 5000 in host mode on every node over one storage folder they share, so that
every node pulls `127.0.0.1:5000/NAME` (plain HTTP is allowed for 127.0.0.0/8). It yields a
`Swarm`: the manager's URL, a client per node, node ids and hostnames, the registry address,
`push` (an image of the outer engine -> the registry, by digest) and `stop_node` /
`start_node` (kill a worker's engine abruptly, bring it back).

Why host mode: this kernel has no IPVS, so the routing mesh (ports published through the
ingress network) does not work; a port published in host mode is a plain DNAT rule on the
node. Why one shared folder: a push to any node's registry is then visible to every node.

Everything created on the outer engine (containers, their volumes, the network, the
registry's storage volume) carries io.runner.test=swarm and io.runner.test.session=ID, and
is removed on exit, also when the start fails half way. What a killed session left:

    docker rm -f $(docker ps -aq -f label=io.runner.test=swarm)
    docker volume rm $(docker volume ls -q -f label=io.runner.test=swarm)
    docker network rm $(docker network ls -q -f label=io.runner.test=swarm)

The swarm's own state (services, configs, volumes on the nodes) lives inside the dind
engines and goes with their volumes.
"""

from __future__ import annotations

import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field
from typing import IO, Any, TypeVar

import docker
import docker.errors
import requests
from docker.types import EndpointSpec, Mount, ServiceMode, TaskTemplate

from tests.integration import dind
from tests.integration.helpers import REPO

REGISTRY_IMAGE = "runner-test/registry:latest"
REGISTRY_CONTEXT = REPO / "images" / "registry"
REGISTRY_PORT = 5000
REGISTRY = f"127.0.0.1:{REGISTRY_PORT}"
"""What every node pulls from: its own instance of the global registry service."""
REGISTRY_SERVICE = "registry"
REGISTRY_STORAGE = "/srv/registry"
"""Where the shared storage volume is mounted in every dind container (and bound from)."""
SWARM_LABEL = "swarm"
"""The value of dind.TEST_LABEL on everything this module creates on the outer engine."""
SESSION_LABEL = "io.runner.test.session"
NETWORK_INTERFACE = "eth0"
"""The dind containers' one interface (on the user network): what swarm advertises."""
DEFAULT_IMAGES = ("debian:bookworm-slim",)
HOSTNAMES = ("manager", "worker1", "worker2")
READY_TIMEOUT_S = 60.0
POLL_S = 0.2

T = TypeVar("T")


class SwarmError(RuntimeError):
    """The test swarm could not be started or did not reach the state asked for."""


@dataclass
class SwarmNode:
    """One engine of the swarm. `url` and `client` change when the node is started again
    after `Swarm.stop_node` (a new port on 127.0.0.1); `node_id` and `hostname` do not."""

    hostname: str
    role: str  # "manager" or "worker"
    node_id: str
    address: str  # its IP on the user network, where the other nodes reach it
    engine: dind.Launched

    @property
    def url(self) -> str:
        return self.engine.url

    @property
    def client(self) -> docker.DockerClient:
        return self.engine.client

    @property
    def api(self) -> docker.APIClient:
        """The node's low-level client (docker-py's APIClient)."""
        return self.engine.client.api


@dataclass
class Swarm:
    """A running three-node swarm; see the module docstring."""

    nodes: tuple[SwarmNode, ...]
    network: str
    session: str
    mode: str  # how the dind containers were started: "privileged" or "fallback"
    registry: str = REGISTRY
    timings: dict[str, float] = field(default_factory=dict)
    outer: Any = None  # docker.DockerClient of the outer engine
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def manager(self) -> SwarmNode:
        return self.nodes[0]

    @property
    def workers(self) -> tuple[SwarmNode, ...]:
        return self.nodes[1:]

    @property
    def manager_url(self) -> str:
        """What DOCKER_HOST is set to for the runner: tcp://127.0.0.1:PORT, no TLS."""
        return self.manager.url

    @property
    def api(self) -> docker.APIClient:
        """The manager's low-level client: the only API the runner may use."""
        return self.manager.api

    def node(self, key: str) -> SwarmNode:
        """The node with this hostname or node id."""
        for node in self.nodes:
            if key in (node.hostname, node.node_id):
                return node
        raise KeyError(f"no node {key!r} in {[n.hostname for n in self.nodes]}")

    def node_states(self) -> dict[str, str]:
        """hostname -> Status.State as the manager reports it ("ready", "down", ...)."""
        return {n["Description"]["Hostname"]: n["Status"]["State"] for n in self.api.nodes()}

    def wait_for_node_state(
        self, node: SwarmNode, state: str, timeout_s: float = READY_TIMEOUT_S
    ) -> float:
        """Poll the manager until it reports `node` in `state`; return the seconds waited."""
        started = time.monotonic()
        seen = "?"
        while time.monotonic() - started < timeout_s:
            seen = self.api.inspect_node(node.node_id)["Status"]["State"]
            if seen == state:
                return time.monotonic() - started
            time.sleep(POLL_S)
        raise SwarmError(
            f"node {node.hostname} is still {seen!r}, not {state!r}, after {timeout_s:.0f}s"
        )

    def stop_node(self, node: SwarmNode) -> None:
        """Kill the node's dind container (SIGKILL): its engine and every container on it
        vanish at once, as when a machine loses power. The manager cannot be stopped."""
        if node is self.manager:
            raise SwarmError("the manager cannot be stopped: the swarm would be gone")
        node.engine.container.kill()

    def start_node(self, node: SwarmNode, *, wait_ready: bool = True) -> None:
        """Start a stopped node's container again; wait until its engine answers and, by
        default, until the manager reports it ready."""
        node.engine.restart()
        if wait_ready:
            self.wait_for_node_state(node, "ready")

    def push(self, reference: str) -> str:
        """Copy an image of the outer engine into the manager (unless there), push it to the
        registry as 127.0.0.1:5000/NAME:TAG and return that name by digest
        (127.0.0.1:5000/NAME@sha256:...), which every node can pull."""
        repository, tag = _split_reference(reference)
        target = f"{self.registry}/{repository}"
        with self._lock:  # two pushes of one image would load it twice
            try:
                self.manager.client.images.get(reference)
            except docker.errors.ImageNotFound:
                load_images(self.outer, [self.manager.client], [reference])
            self.api.tag(reference, target, tag)
        errors = [
            event["error"]
            for event in self.api.push(target, tag, stream=True, decode=True)
            if "error" in event
        ]
        if errors:
            raise SwarmError(f"push of {target}:{tag} failed: {errors[-1]}")
        image = self.api.inspect_image(f"{target}:{tag}")  # type: ignore[no-untyped-call]  # untyped in the stubs
        digests = image["RepoDigests"]
        for digest in digests:
            if digest.startswith(f"{target}@"):
                return str(digest)
        raise SwarmError(f"{target}:{tag} was pushed but has no digest ({digests})")

    def summary(self) -> str:
        times = ", ".join(f"{name} {seconds:.1f}s" for name, seconds in self.timings.items())
        hosts = ", ".join(f"{n.hostname}={n.url}" for n in self.nodes)
        return f"swarm of 3 ({self.mode}): {hosts}; registry {self.registry}; {times}"


@contextmanager
def swarm_cluster(
    outer: docker.DockerClient,
    images: Sequence[str] = DEFAULT_IMAGES,
    *,
    heartbeat_s: float | None = None,
) -> Iterator[Swarm]:
    """Start the swarm (see the module docstring) with `images` loaded on every node; remove
    everything it created on exit. `heartbeat_s` sets the dispatcher heartbeat (Swarm's
    default: 5 s, a lost node is marked down after about 13 s; with 1 s, after about 2 s,
    but a loaded machine may then see busy nodes go down)."""
    session = uuid.uuid4().hex[:10]
    labels = {dind.TEST_LABEL: SWARM_LABEL, SESSION_LABEL: session}
    prefix = f"runner-test-swarm-{session}"
    timings: dict[str, float] = {}
    with ExitStack() as cleanup:
        started = time.monotonic()
        image = dind.build_image(outer)
        build_registry_image(outer)
        timings["build"] = time.monotonic() - started

        started = time.monotonic()
        network = outer.networks.create(prefix, driver="bridge", labels=labels)
        network_name = str(network.name)
        cleanup.callback(_remove_network, network)
        storage = outer.volumes.create(f"{prefix}-registry", labels=labels)
        cleanup.callback(_remove_volume, storage)
        # Registered after the network and the volume: ExitStack runs its callbacks last
        # first, so the containers go before what they use.
        engines = _in_parallel(
            lambda hostname: dind.launch(
                outer,
                f"{prefix}-{hostname}",
                labels,
                image=image,
                network=network_name,
                hostname=hostname,
                binds=[f"{storage.name}:{REGISTRY_STORAGE}:rw"],
            ),
            HOSTNAMES,
            undo=dind.Launched.discard,
        )
        # Stopping an engine takes seconds (its containers stop first): all at once.
        cleanup.callback(_in_parallel, dind.Launched.discard, engines)
        timings["engines"] = time.monotonic() - started

        started = time.monotonic()
        load_images(outer, [e.client for e in engines], [*images, REGISTRY_IMAGE])
        timings["load_images"] = time.monotonic() - started

        started = time.monotonic()
        nodes = form_swarm(engines, network_name, heartbeat_s)
        cluster = Swarm(
            nodes=nodes,
            network=network_name,
            session=session,
            mode=engines[0].mode,
            timings=timings,
            outer=outer,
        )
        for node in nodes:
            cluster.wait_for_node_state(node, "ready")
        timings["swarm"] = time.monotonic() - started

        started = time.monotonic()
        start_registry(cluster)
        timings["registry"] = time.monotonic() - started
        yield cluster


def build_registry_image(outer: docker.DockerClient) -> None:
    """(Re)build runner-test/registry from images/registry (cached: about a second)."""
    try:
        outer.images.build(
            path=str(REGISTRY_CONTEXT), tag=REGISTRY_IMAGE, rm=True, forcerm=True, pull=False
        )
    except docker.errors.BuildError as exc:
        output = "".join(str(chunk.get("stream", "")) for chunk in exc.build_log)
        raise SwarmError(f"cannot build {REGISTRY_IMAGE}: {exc}\n{output}") from exc


def load_images(
    outer: docker.DockerClient, targets: Sequence[docker.DockerClient], references: Sequence[str]
) -> None:
    """`docker save` the images once (one archive: shared layers travel once) into a
    temporary file, then `docker load` it into every target engine at the same time."""
    for reference in references:
        try:
            outer.images.get(reference)
        except docker.errors.ImageNotFound as exc:
            raise SwarmError(f"image {reference} is not on the outer engine") from exc
    with tempfile.TemporaryFile() as archive:
        # GET /images/get with several names: what `docker save A B` sends (docker-py's
        # Image.save takes one image only).
        api = outer.api
        response = api.get(
            f"{api.base_url}/v{api.api_version}/images/get",
            params={"names": list(references)},
            stream=True,
            timeout=dind.CLIENT_TIMEOUT_S,
        )
        response.raise_for_status()
        for chunk in response.iter_content(chunk_size=1024 * 1024):
            archive.write(chunk)

        def load(client: docker.DockerClient) -> None:
            # Opened anew through /proc so that each thread reads with an offset of its own.
            with open(f"/proc/self/fd/{archive.fileno()}", "rb") as data:
                client.images.load(_chunks(data))  # type: ignore[arg-type]  # stub: bytes only

        _in_parallel(load, targets)
    for client in targets:
        for reference in references:
            try:
                client.images.get(reference)
            except docker.errors.ImageNotFound as exc:
                raise SwarmError(f"{reference} was loaded but the engine lacks it") from exc


def form_swarm(
    engines: Sequence[dind.Launched], network: str, heartbeat_s: float | None = None
) -> tuple[SwarmNode, ...]:
    """`swarm init` on the first engine, `swarm join` of the others as workers."""
    manager, *workers = engines
    options: dict[str, Any] = {}
    if heartbeat_s is not None:
        options["dispatcher_heartbeat_period"] = int(heartbeat_s * 1e9)  # nanoseconds
    manager_id = manager.client.swarm.init(
        advertise_addr=NETWORK_INTERFACE, listen_addr="0.0.0.0:2377", **options
    )
    manager_address = _address(manager, network)
    token = manager.client.swarm.attrs["JoinTokens"]["Worker"]

    def join(engine: dind.Launched) -> None:
        engine.client.swarm.join(
            remote_addrs=[f"{manager_address}:2377"],
            join_token=token,
            advertise_addr=NETWORK_INTERFACE,
            listen_addr="0.0.0.0:2377",
        )

    _in_parallel(join, workers)
    nodes = [
        SwarmNode(
            hostname=HOSTNAMES[0],
            role="manager",
            node_id=str(manager_id),
            address=manager_address,
            engine=manager,
        )
    ]
    for hostname, engine in zip(HOSTNAMES[1:], workers, strict=True):
        node_id = engine.client.info()["Swarm"]["NodeID"]
        nodes.append(
            SwarmNode(
                hostname=hostname,
                role="worker",
                node_id=node_id,
                address=_address(engine, network),
                engine=engine,
            )
        )
    return tuple(nodes)


def start_registry(cluster: Swarm) -> None:
    """Run the registry as a global service, port 5000 published in host mode on every
    node, storage in the folder all dind containers share; wait until each answers."""
    cluster.api.create_service(  # type: ignore[no-untyped-call]  # untyped in the stubs
        TaskTemplate(
            container_spec=docker.types.ContainerSpec(
                REGISTRY_IMAGE,
                mounts=[Mount("/var/lib/registry", REGISTRY_STORAGE, type="bind")],
            ),
        ),
        name=REGISTRY_SERVICE,
        mode=ServiceMode("global"),
        # The stubs want str keys; the engine wants the published port as a number.
        endpoint_spec=EndpointSpec(ports={REGISTRY_PORT: (REGISTRY_PORT, "tcp", "host")}),  # type: ignore[dict-item]
    )
    deadline = time.monotonic() + READY_TIMEOUT_S
    waiting = {
        node.hostname: f"http://{node.address}:{REGISTRY_PORT}/v2/" for node in cluster.nodes
    }
    while waiting:
        for hostname, url in list(waiting.items()):
            with suppress(requests.RequestException):
                if requests.get(url, timeout=2).status_code == 200:
                    del waiting[hostname]
        if time.monotonic() > deadline:
            found = cluster.api.tasks()  # type: ignore[no-untyped-call]  # untyped in the stubs
            tasks = [(t.get("NodeID"), t["Status"]) for t in found]
            raise SwarmError(f"the registry does not answer on {sorted(waiting)}: {tasks}")
        if waiting:
            time.sleep(POLL_S)


def _address(engine: dind.Launched, network: str) -> str:
    engine.container.reload()
    return str(engine.container.attrs["NetworkSettings"]["Networks"][network]["IPAddress"])


def _split_reference(reference: str) -> tuple[str, str]:
    name, _, tag = reference.rpartition(":")
    if not name or "/" in tag:
        return reference, "latest"
    return name, tag


def _chunks(data: IO[bytes]) -> Iterator[bytes]:
    while chunk := data.read(1024 * 1024):
        yield chunk


def _in_parallel(
    work: Callable[[Any], T], items: Sequence[Any], undo: Callable[[T], None] | None = None
) -> list[T]:
    """Run `work` on every item in threads; return the results in order. If any call fails,
    wait for all, `undo` the results of those that succeeded, and raise the first error."""
    with ThreadPoolExecutor(max_workers=len(items)) as pool:
        futures = [pool.submit(work, item) for item in items]
    errors = [error for f in futures if (error := f.exception()) is not None]
    if errors:
        for future in futures:
            if future.exception() is None and undo is not None:
                undo(future.result())
        raise errors[0]
    return [f.result() for f in futures]


def _remove_network(network: Any) -> None:
    with suppress(docker.errors.NotFound):
        network.remove()


def _remove_volume(volume: Any) -> None:
    with suppress(docker.errors.NotFound):
        volume.remove(force=True)
