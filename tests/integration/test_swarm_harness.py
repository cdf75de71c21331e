"""The test swarm itself (tests/integration/swarm.py): three nodes ready, a registry every
node pulls from, a job service placed on each node, and a worker stopped and started.

What the Swarm backend's tests rely on, checked once here so that their failures are about
the backend, not about the harness.
"""

from __future__ import annotations

import io
import tarfile
import time
import uuid
from typing import Any

import docker
from docker.types import ContainerSpec, Placement, RestartPolicy, ServiceMode, TaskTemplate

from tests.integration.swarm import Swarm, SwarmNode

FINAL_STATES = {"complete", "failed", "rejected", "shutdown", "orphaned", "remove"}
JOB_TIMEOUT_S = 120.0


def run_job(swarm: Swarm, image: str, command: str, node: SwarmNode) -> tuple[dict[str, Any], str]:
    """A one-replica `replicated-job` service placed on `node`: wait for its task to end,
    read its logs, remove it; return the task and the logs."""
    api = swarm.api
    service = api.create_service(  # type: ignore[no-untyped-call]  # untyped in the stubs
        TaskTemplate(
            ContainerSpec(image, command=["/bin/sh", "-c", command]),
            restart_policy=RestartPolicy(condition="none"),
            placement=Placement(constraints=[f"node.id=={node.node_id}"]),
        ),
        name=f"test-harness-{uuid.uuid4().hex[:10]}",
        mode=ServiceMode("replicated-job", replicas=1),
    )["ID"]
    try:
        deadline = time.monotonic() + JOB_TIMEOUT_S
        while True:
            tasks = api.tasks(filters={"service": service})  # type: ignore[no-untyped-call]  # untyped in the stubs
            if tasks and tasks[0]["Status"]["State"] in FINAL_STATES:
                break
            assert time.monotonic() < deadline, f"job on {node.hostname} did not end: {tasks}"
            time.sleep(0.1)
        logs = b"".join(api.service_logs(service, stdout=True, stderr=True))
        return tasks[0], logs.decode()
    finally:
        api.remove_service(service)  # type: ignore[no-untyped-call]  # untyped in the stubs


def build_on_manager(swarm: Swarm, tag: str, dockerfile: str) -> None:
    """Build an image on the manager's engine from a Dockerfile alone (no other files)."""
    context = io.BytesIO()
    with tarfile.open(fileobj=context, mode="w") as tar:
        data = dockerfile.encode()
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    context.seek(0)
    swarm.manager.client.images.build(fileobj=context, custom_context=True, tag=tag, pull=False)


def test_three_nodes_are_ready_one_manager(swarm: Swarm) -> None:
    nodes = swarm.api.nodes()
    assert {n["Description"]["Hostname"]: n["Status"]["State"] for n in nodes} == {
        "manager": "ready",
        "worker1": "ready",
        "worker2": "ready",
    }
    managers = [n["ID"] for n in nodes if n["Spec"]["Role"] == "manager"]
    assert managers == [swarm.manager.node_id]
    assert {n.node_id for n in swarm.nodes} == {n["ID"] for n in nodes}
    for node in swarm.nodes:  # every node's own engine answers, and knows itself
        assert node.client.info()["Swarm"]["NodeID"] == node.node_id


def test_an_image_pushed_from_the_manager_runs_on_each_node(swarm: Swarm) -> None:
    """Built on the manager with content of its own, so that a node can only run it by
    pulling it from its 127.0.0.1:5000: nothing else holds that image."""
    token = uuid.uuid4().hex
    local = f"runner-test/harness-{token[:8]}:latest"
    build_on_manager(swarm, local, f"FROM debian:bookworm-slim\nRUN echo {token} > /token\n")
    name, _, tag = local.rpartition(":")
    swarm.api.tag(local, f"{swarm.registry}/{name}", tag)
    pushed = swarm.api.push(f"{swarm.registry}/{name}", tag, stream=True, decode=True)
    assert not [event for event in pushed if "error" in event]
    reference = swarm.api.inspect_image(f"{swarm.registry}/{name}:{tag}")["RepoDigests"][0]  # type: ignore[no-untyped-call]  # untyped in the stubs
    assert reference.startswith(f"{swarm.registry}/{name}@sha256:")

    for node in swarm.nodes:
        if node is not swarm.manager:
            try:
                node.client.images.get(reference)
                raise AssertionError(f"{node.hostname} has {reference} before the job")
            except docker.errors.ImageNotFound:
                pass
        task, logs = run_job(swarm, reference, "cat /token; hostname", node)
        assert task["NodeID"] == node.node_id
        assert task["Status"]["State"] == "complete", task["Status"]
        assert task["Status"]["ContainerStatus"]["ExitCode"] == 0
        assert logs.split() == [token, task["Status"]["ContainerStatus"]["ContainerID"][:12]]
        node.client.images.get(reference)  # pulled from the registry, by digest


def test_push_helper_returns_a_digest_every_node_runs(swarm: Swarm) -> None:
    reference = swarm.push("debian:bookworm-slim")
    assert reference.startswith(f"{swarm.registry}/debian@sha256:")
    task, logs = run_job(swarm, reference, "echo pulled", swarm.workers[-1])
    assert (task["Status"]["State"], logs) == ("complete", "pulled\n")


def test_a_stopped_worker_is_marked_down_then_ready_again(swarm: Swarm) -> None:
    worker = swarm.workers[0]
    swarm.stop_node(worker)
    try:
        # Swarm's heartbeat (5 s by default) misses for a while: about 12 s here.
        waited = swarm.wait_for_node_state(worker, "down", timeout_s=60)
        assert waited > 1.0  # abrupt: nothing told the manager
    finally:
        swarm.start_node(worker)
    assert swarm.node_states()[worker.hostname] == "ready"
    assert worker.client.info()["Swarm"]["NodeID"] == worker.node_id
    task, logs = run_job(swarm, "debian:bookworm-slim", "echo back", worker)
    assert (task["Status"]["State"], logs) == ("complete", "back\n")
