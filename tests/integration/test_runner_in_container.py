"""The runner in its own container, driving this machine's engine through the mounted
socket: GitHub Actions' container jobs (docs/ci/github-actions.yml), and the README's
`docker run ... runner:local run hello.yml`.

In a GitHub job the checkout is /home/runner/work/R/R on the host and /__w/R/R in the
job container (actions/runner#827); here a temporary folder plays the host's side and is
mounted at /__w/runner/runner.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import BASE_IMAGE
from tests.integration.helpers import REPO
from tests.integration.runner_image import RUNNER_IMAGE, make_checkout

RECIPE = REPO / "docs" / "ci" / "github-actions.yml"
WORKSPACE = "/__w/runner/runner"  # the checkout inside a GitHub job container
SOCKET = "/var/run/docker.sock"
LABELS = {"io.runner.test": "runner-in-container"}

BIND_FLOW = f"""
id: bind_from_the_checkout
tasks:
  - id: look
    image: {BASE_IMAGE}
    volumes: ["./data:/data:ro"]
    command: "cat /data/message.txt"
"""


def recipe_steps() -> list[str]:
    """The `run` steps of the recipe's `flow` job."""
    job = yaml.safe_load(RECIPE.read_text())["jobs"]["flow"]
    return [step["run"] for step in job["steps"] if "run" in step]


def job(docker_client: Any, image: str, checkout: Path, script: str, **env: str) -> tuple[int, str]:
    """What Actions does for a container job's `run` step: the image with the socket and
    the checkout mounted, the step run by `sh -e` in the workspace, as root."""
    container = docker_client.containers.run(
        image,
        entrypoint=["sh", "-ec"],
        command=[script],
        environment=env,
        volumes={
            SOCKET: {"bind": SOCKET, "mode": "rw"},
            str(checkout): {"bind": WORKSPACE, "mode": "rw"},
        },
        working_dir=WORKSPACE,
        labels=LABELS,
        detach=True,
    )
    try:
        status = container.wait(timeout=600)
        return int(status["StatusCode"]), container.logs().decode(errors="replace")
    finally:
        container.remove(force=True)


@pytest.fixture
def checkout(tmp_path: Path, docker_client: Any) -> Path:
    """The host's side of the checkout, with the task images of the polyglot flow built
    (on this engine, which the job drives) so that the job's `build:` finds them."""
    from runner.backends.docker import DockerBackend
    from runner.execution import BuildImage

    for name in ("python", "node", "shell"):
        DockerBackend(docker_client).ensure_image(BuildImage(REPO / "images" / name))
    folder = make_checkout(tmp_path / "work" / "runner" / "runner")
    # `./data` of flows/bind.yml: relative to the flow file's folder, as every path is
    (folder / "flows" / "data").mkdir()
    (folder / "flows" / "data" / "message.txt").write_text("from the checkout on the host\n")
    (folder / "flows" / "bind.yml").write_text(BIND_FLOW)
    return folder


def test_the_github_recipe_runs_the_polyglot_flow_through_the_socket(
    docker_client: Any, runner_image: str, checkout: Path
) -> None:
    """`build:`, `files:` and artifacts travel through the engine's API: no path of the
    job container reaches the engine, so nothing needs translating."""
    [step] = recipe_steps()
    code, output = job(docker_client, runner_image, checkout, step)
    assert code == 0, output
    assert "extract wrote 200 trips, zones.json sums to 200" in output
    [zones] = checkout.glob(".runner/artifacts/*/report/report/zones.json")
    assert json.loads(zones.read_text())


def test_a_relative_bind_mount_works_through_the_translation(
    docker_client: Any, runner_image: str, checkout: Path
) -> None:
    """`./data` is /__w/runner/runner/data for the runner; the engine knows it by the
    host's path, which the runner finds through its own container's mounts."""
    code, output = job(docker_client, runner_image, checkout, "runner run flows/bind.yml")
    assert code == 0, output
    assert "from the checkout on the host" in output


TRANSLATE = """
import json, sys
from runner.backends.docker import _translate
from runner.backends.docker_connection import client_from_env, find_own_container, host_path_translator
from runner.errors import HostPathError
client = client_from_env(_translate)
own = find_own_container(client, _translate)
translate = host_path_translator(client, _translate)
import socket
result = {"own": own.id if own else None, "mapped_by": translate.runner.mapped_by,
          "hostname": socket.gethostname()}
for path in sys.argv[1:]:
    try:
        result[path] = translate(path, "volume")
    except HostPathError as exc:
        result[path] = "refused: " + str(exc)
print(json.dumps(result))
"""


def translate_in_job(
    docker_client: Any, image: str, checkout: Path, *paths: str, **env: str
) -> dict[str, Any]:
    args = " ".join(f"'{p}'" for p in paths)
    code, output = job(
        docker_client, image, checkout, f'python3 -c "$SNIPPET" {args}', SNIPPET=TRANSLATE, **env
    )
    assert code == 0, output
    data: dict[str, Any] = json.loads(output.strip().splitlines()[-1])
    return data


def test_the_runner_finds_its_own_container_and_translates_through_its_mounts(
    docker_client: Any, runner_image: str, checkout: Path
) -> None:
    """What the wiring will use, against the real engine: the container is found by
    inspecting itself, a path under the checkout becomes the host's, a path of the image
    is refused with a message naming the container and RUNNER_HOST_PATH_MAP."""
    result = translate_in_job(
        docker_client,
        runner_image,
        checkout,
        f"{WORKSPACE}/data",
        SOCKET,
        "/opt/runner/data",
    )
    assert result["own"][:12] == result["hostname"]  # the job container itself
    assert result["mapped_by"] == "mounts"
    assert result[f"{WORKSPACE}/data"] == str(checkout / "data")
    assert result[SOCKET] == SOCKET
    refused = result["/opt/runner/data"]
    assert refused.startswith(
        "refused: volume: '/opt/runner/data' is inside the runner's own container ("
    )
    assert result["own"][:12] in refused and "RUNNER_HOST_PATH_MAP" in refused


def test_runner_host_path_map_replaces_the_detection(
    docker_client: Any, runner_image: str, checkout: Path
) -> None:
    result = translate_in_job(
        docker_client,
        runner_image,
        checkout,
        f"{WORKSPACE}/data",
        RUNNER_HOST_PATH_MAP=f"{WORKSPACE}=/somewhere/else",
    )
    assert result["mapped_by"] == "RUNNER_HOST_PATH_MAP"
    assert result[f"{WORKSPACE}/data"] == "/somewhere/else/data"


def test_the_readme_command_runs_hello_as_the_owner_of_the_flows_folder(
    docker_client: Any, runner_image: str, tmp_path: Path
) -> None:
    """`docker run --rm -v /var/run/docker.sock:/var/run/docker.sock -v "$PWD/flows:/flows"
    runner:local run hello.yml`, as the README writes it (the tag replaced by the image id
    built here). The flows folder belongs to uid 1000 (a user's checkout): the entrypoint
    runs runner as 1000 with the socket's group, so the history it writes is the user's."""
    readme = (REPO / "README.md").read_text()
    command = (
        'docker run --rm -v /var/run/docker.sock:/var/run/docker.sock -v "$PWD/flows:/flows" '
        f"{RUNNER_IMAGE} run hello.yml"
    )
    assert command in readme
    shutil.copytree(REPO / "flows", tmp_path / "flows", ignore=shutil.ignore_patterns(".runner"))
    subprocess.run(["chown", "-R", "1000:1000", str(tmp_path / "flows")], check=True)
    out = subprocess.run(
        ["sh", "-c", command.replace(RUNNER_IMAGE, runner_image)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout
    database = tmp_path / "flows" / ".runner" / "runner.db"
    assert (database.stat().st_uid, database.stat().st_gid) == (1000, 1000)


def test_the_image_is_healthy_when_the_engine_answers(
    docker_client: Any, runner_image: str
) -> None:
    """The HEALTHCHECK's own command, run in a container with and without the socket."""
    config = docker_client.images.get(runner_image).attrs["Config"]
    check = config["Healthcheck"]["Test"]
    assert check[0] == "CMD"
    name = f"runner-test-health-{uuid.uuid4().hex[:8]}"
    healthy = docker_client.containers.run(
        runner_image, entrypoint=check[1:], volumes={SOCKET: {"bind": SOCKET, "mode": "rw"}},
        name=name, labels=LABELS, detach=True,
    )  # fmt: skip
    unhealthy = docker_client.containers.run(
        runner_image, entrypoint=check[1:], labels=LABELS, detach=True
    )
    try:
        assert healthy.wait(timeout=60)["StatusCode"] == 0, healthy.logs()
        assert unhealthy.wait(timeout=60)["StatusCode"] == 1
        assert b"unhealthy: cannot reach the Docker engine" in unhealthy.logs()
    finally:
        healthy.remove(force=True)
        unhealthy.remove(force=True)
    size_mb = docker_client.images.get(runner_image).attrs["Size"] / 1e6
    print(f"runner image: {size_mb:.0f} MB")
