"""Flows run against a Docker engine that cannot see the runner's disk: a Docker-in-Docker
engine reached through DOCKER_HOST=tcp://..., as in CI jobs with a dind service.

Everything a task needs must travel over the engine's API: images (loaded into the inner
engine beforehand, as nothing can be pulled here), build contexts, inline scripts and the
workspace volume, which lives on the remote engine. The local engine only hosts the dind
container and must see none of an execution's containers or volumes.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from runner.backends.docker import WORKSPACE_PREFIX
from runner.execution import LABEL_TASK_RUN
from tests.conftest import BASE_IMAGE
from tests.integration.dind import DindEngine, dind_engine
from tests.integration.helpers import REPO, Cli, execution_id_of, labelled, run_ok, write_flow

FLOW_IMAGE = "debian:bookworm-slim"  # the image of flows/hello.yml and flows/fanout_join.yml


@pytest.fixture(scope="module")
def dind(docker_client: Any) -> Iterator[DindEngine]:
    """One dind engine for this module's tests, holding the images the flows use; removed
    as soon as they are done, not idling through the rest of the session."""
    with dind_engine(docker_client, images=list(dict.fromkeys([FLOW_IMAGE, BASE_IMAGE]))) as engine:
        print(f"\n{engine.summary()}")  # shown with -s: how it was started, how long it took
        yield engine


@pytest.fixture
def dind_host(dind: DindEngine, monkeypatch: pytest.MonkeyPatch) -> str:
    """Point the `runner` subprocesses of this test at the dind engine (the `Cli` helper
    copies os.environ), as a CI job with `DOCKER_HOST: tcp://docker:2375` would."""
    monkeypatch.setenv("DOCKER_HOST", dind.url)
    for name in ("DOCKER_TLS_VERIFY", "DOCKER_CERT_PATH", "DOCKER_CONTEXT"):
        monkeypatch.delenv(name, raising=False)
    return dind.url


def events(client: Any, since: float, **filters: str) -> list[dict[str, Any]]:
    """The engine's events from `since` until now that match `filters`."""
    stream = client.events(since=since, until=time.time(), filters=filters, decode=True)
    return list(stream)


def assert_ran_only_remotely(
    outer: Any, inner: Any, execution_id: str, since: float, tasks: int
) -> None:
    """The inner engine created `tasks` containers and the workspace volume and removed
    them all; the outer engine saw none of them."""
    label = f"io.runner.execution={execution_id}"
    workspace = f"{WORKSPACE_PREFIX}{execution_id}"
    assert events(outer, since, label=label) == []
    assert events(outer, since, type="volume", volume=workspace) == []
    assert labelled(outer, execution_id) == ([], [])

    created = [  # task containers; the workspace's helper containers carry no task run
        e["Actor"]["Attributes"]["name"]
        for e in events(inner, since, type="container", label=label)
        if e["Action"] == "create" and LABEL_TASK_RUN in e["Actor"]["Attributes"]
    ]
    assert len(created) == tasks, created
    volume_actions = [e["Action"] for e in events(inner, since, type="volume", volume=workspace)]
    assert "create" in volume_actions and "destroy" in volume_actions, volume_actions
    assert labelled(inner, execution_id) == ([], [])


def log_lines(cli: Cli, execution_id: str, task_id: str) -> list[str]:
    out = cli("logs", execution_id, "--task", task_id, "--json")
    assert out.returncode == 0, out.stderr
    return [ln["line"] for ln in json.loads(out.stdout)]


def test_hello_flow_on_the_remote_engine(
    cli: Cli, dind_host: str, dind: DindEngine, docker_client: Any
) -> None:
    since = time.time()
    execution_id = run_ok(cli, ["run", str(REPO / "flows/hello.yml")])
    shown = cli.show(execution_id)
    assert shown["state"] == "SUCCESS"
    assert [(r["task_id"], r["state"], r["exit_code"]) for r in shown["task_runs"]] == [
        ("hello", "SUCCESS", 0)
    ]
    greeting, where = log_lines(cli, execution_id, "hello")
    assert greeting.startswith("Hello from 12.") and greeting.endswith(execution_id)
    assert where == "task hello, attempt 1, workspace /workspace"
    assert_ran_only_remotely(docker_client, dind.client, execution_id, since, tasks=1)


def test_fanout_join_on_the_remote_engine(
    cli: Cli, dind_host: str, dind: DindEngine, docker_client: Any
) -> None:
    since = time.time()
    execution_id = run_ok(cli, ["run", str(REPO / "flows/fanout_join.yml")])
    shown = cli.show(execution_id)
    assert shown["state"] == "SUCCESS"
    assert {r["task_id"]: r["state"] for r in shown["task_runs"]} == {
        task: "SUCCESS" for task in ("prepare", "part_a", "part_b", "part_c", "join")
    }
    assert log_lines(cli, execution_id, "part_b") == ["500500"]
    assert log_lines(cli, execution_id, "join") == ["total: 1501500"]
    assert_ran_only_remotely(docker_client, dind.client, execution_id, since, tasks=5)


def test_build_context_travels_to_the_remote_engine(
    cli: Cli, dind_host: str, dind: DindEngine, docker_client: Any, tmp_path: Path
) -> None:
    """`build:` sends the folder as the build context over the API: the remote engine
    builds (and keeps) the image, the local one never sees it."""
    context = tmp_path / "remote_build_ctx"
    context.mkdir()
    (context / "message.txt").write_text("copied from the runner's disk\n")
    (context / "Dockerfile").write_text(
        f"FROM {BASE_IMAGE}\n"
        "COPY message.txt /message.txt\n"
        "RUN echo 'built by the remote engine' > /built.txt\n"
    )
    flow = write_flow(
        tmp_path,
        "id: remote_build\ntasks:\n"
        "  - {id: show, build: remote_build_ctx, command: 'cat /message.txt /built.txt'}\n",
    )
    since = time.time()
    execution_id = run_ok(cli, ["run", str(flow)])
    assert cli.show(execution_id)["state"] == "SUCCESS"
    assert log_lines(cli, execution_id, "show") == [
        "copied from the runner's disk",
        "built by the remote engine",
    ]
    assert_ran_only_remotely(docker_client, dind.client, execution_id, since, tasks=1)
    repository = "runner-build/remote-build-ctx"
    assert dind.client.images.list(name=repository) != []
    assert docker_client.images.list(name=repository) == []


def test_workspace_volume_lives_on_the_remote_engine(
    cli: Cli, dind_host: str, dind: DindEngine, docker_client: Any, tmp_path: Path
) -> None:
    flow = write_flow(
        tmp_path,
        f"""
id: remote_workspace
defaults: {{image: {BASE_IMAGE}}}
tasks:
  - {{id: write, command: 'echo "written by $RUNNER_TASK_ID" > note.txt'}}
  - {{id: read, depends_on: [write], command: 'cat /workspace/note.txt'}}
""",
    )
    since = time.time()
    execution_id = run_ok(cli, ["run", str(flow)])
    assert cli.show(execution_id)["state"] == "SUCCESS"
    assert log_lines(cli, execution_id, "read") == ["written by write"]
    assert_ran_only_remotely(docker_client, dind.client, execution_id, since, tasks=2)


BIND_FLOW = f"""
id: remote_bind
tasks:
  - id: look
    image: {BASE_IMAGE}
    volumes: ["./data:/data:ro"]
    command: "cat /data/secret.txt"
"""


def test_relative_bind_mount_is_missing_on_the_remote_engine(
    cli: Cli, dind_host: str, dind: DindEngine, docker_client: Any, tmp_path: Path
) -> None:
    """A bind mount names a path on the ENGINE's machine. `./data` is resolved against the
    flow's folder on the runner's disk, and the remote engine has no such folder: it refuses
    to create the container, so the task fails with the engine's reason and the path.
    (Flows meant for a remote engine deliver files with `files:`, which copies them into the
    workspace over the API, or bake them into an image with `build:`.)"""
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "secret.txt").write_text("on the runner's disk\n")
    flow = write_flow(tmp_path, BIND_FLOW)
    out = cli("run", str(flow))
    assert out.returncode == 1 and out.stdout, out.stderr
    execution_id = execution_id_of(out.stdout)
    shown = cli.show(execution_id)
    assert shown["state"] == "FAILED"
    [run] = shown["task_runs"]
    assert run["state"] == "FAILED"
    assert "bind source path does not exist" in run["error"]
    assert str(tmp_path / "data") in run["error"]
    assert log_lines(cli, execution_id, "look") == []
    # The workspace is kept after a failure, on the remote engine only.
    assert labelled(docker_client, execution_id) == ([], [])
    containers, volumes = labelled(dind.client, execution_id)
    assert containers == [] and len(volumes) == 1
    volumes[0].remove(force=True)


def test_relative_bind_mount_sees_the_remote_engines_folder(
    cli: Cli, dind_host: str, dind: DindEngine, docker_client: Any, tmp_path: Path
) -> None:
    """Worse than a missing folder: where the engine's machine happens to have a folder at
    the same path, the task silently mounts THAT one, not the runner's. Here the folder is
    created inside the dind container with other content; the task reads the engine's copy."""
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "secret.txt").write_text("on the runner's disk\n")
    remote_dir = str(tmp_path / "data")
    made = dind.container.exec_run(
        [
            "sh",
            "-c",
            'mkdir -p "$1" && echo "on the engine\'s disk" > "$1/secret.txt"',
            "-",
            remote_dir,
        ]
    )
    assert made.exit_code == 0, made.output
    flow = write_flow(tmp_path, BIND_FLOW)
    since = time.time()
    execution_id = run_ok(cli, ["run", str(flow)])
    assert log_lines(cli, execution_id, "look") == ["on the engine's disk"]
    assert_ran_only_remotely(docker_client, dind.client, execution_id, since, tasks=1)


def test_polyglot_etl_files_and_artifacts_on_the_remote_engine(
    cli: Cli, dind_host: str, dind: DindEngine, docker_client: Any
) -> None:
    """The example with `files:` (scripts copied in through the archive API) and
    `artifacts:` (copied out the same way): nothing of it touches the runner's disk on the
    engine's side. The task images are built on the outer engine and loaded into the inner
    one under their content-hash tags, so the runner finds them there and builds nothing."""
    from runner.backends.docker import DockerBackend
    from runner.execution import BuildImage
    from tests.integration.dind import load_image

    outer = DockerBackend(docker_client)
    for name in ("python", "node", "shell"):
        tag = outer.ensure_image(BuildImage(context=REPO / "images" / name))
        load_image(docker_client, dind.client, tag)
    since = time.time()
    execution_id = run_ok(cli, ["run", str(REPO / "flows/polyglot_etl.yml"), "-i", "rows=120"])
    runs = {r["task_id"]: r for r in cli.show(execution_id)["task_runs"]}
    assert runs["extract"]["outputs"] == {"rows": 120, "file": "trips_120.csv"}
    assert (
        log_lines(cli, execution_id, "report")[0]
        == "extract wrote 120 trips, zones.json sums to 120"
    )
    listed = json.loads(cli("artifacts", execution_id, "--json").stdout)
    assert sorted(a["path"] for a in listed) == ["report/zones.json", "report/zones.tsv"]
    zones = json.loads(
        Path(next(a["local_path"] for a in listed if a["path"].endswith(".json"))).read_text()
    )
    assert sum(z["trips"] for z in zones) == 120
    # three tasks (the helper that carried `files:` into the volume carries no task run)
    assert_ran_only_remotely(docker_client, dind.client, execution_id, since, tasks=3)
