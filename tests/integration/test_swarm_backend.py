"""The Swarm backend (RUNNER_BACKEND=swarm) on the three-node test swarm of
tests/integration/swarm.py, through the CLI as a user runs it, with DOCKER_HOST at the
manager: the acceptance flows of the Docker backend (hello, fan-out/join, polyglot with
`build:`, files in and artifacts out up to 100 MB and the hostile archives, every log
line, retries, timeouts, OOM, kill, Ctrl-C, restart, crash recovery, gc) and what only a
swarm has: executions spread over nodes, a `workspace: false` matrix over three nodes, a
node stopped mid-run, a missing image, placement constraints.

Every test checks that its execution left nothing on the swarm: no service, no config, no
volume on any node (`left_behind`). The swarm is started once per session (`swarm`).
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from runner import api
from runner.store import Store, open_store
from tests.conftest import BASE_IMAGE
from tests.integration.helpers import REPO, Cli, execution_id_of, run_ok, write_flow
from tests.integration.swarm import Swarm, load_images
from tests.integration.test_control import (
    COUNTING,
    RESTARTABLE,
    _only_execution,
    _start_and_crash,
    _task_state,
    _wait_for,
)

IMAGE = BASE_IMAGE


@pytest.fixture
def on_swarm(swarm: Swarm, cli: Cli, monkeypatch: pytest.MonkeyPatch) -> Cli:
    """The CLI of `cli`, pointed at the swarm's manager with the Swarm backend."""
    monkeypatch.setenv("DOCKER_HOST", swarm.manager_url)
    monkeypatch.setenv("RUNNER_BACKEND", "swarm")
    monkeypatch.setenv("RUNNER_REGISTRY", swarm.registry)
    for name in ("DOCKER_TLS_VERIFY", "DOCKER_CERT_PATH", "DOCKER_CONTEXT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("RUNNER_SWARM_CONSTRAINTS", raising=False)
    return cli


@pytest.fixture
def store(on_swarm: Cli) -> Iterator[Store]:
    opened = open_store(on_swarm.db_url)
    yield opened
    opened.close()


def left_behind(swarm: Swarm, execution_id: str) -> dict[str, list[str]]:
    """What carries the execution's label on the swarm: services, configs, and volumes on
    each node (asked of the node's own engine, which the runner never talks to)."""
    label = f"io.runner.execution={execution_id}"
    found = {
        "services": [s["Spec"]["Name"] for s in swarm.api.services(filters={"label": label})],
        "configs": [c["Spec"]["Name"] for c in swarm.api.configs(filters={"label": label})],
    }
    for node in swarm.nodes:
        found[f"volumes@{node.hostname}"] = [
            v.name for v in node.client.volumes.list(filters={"label": label})
        ]
    return {key: value for key, value in found.items() if value}


def wait_until_clean(swarm: Swarm, execution_id: str, timeout: float = 30) -> None:
    _wait_for(
        f"nothing of {execution_id} left on the swarm",
        lambda: left_behind(swarm, execution_id) == {},
        timeout,
    )


def logs(cli: Cli, execution_id: str, task: str) -> list[str]:
    out = cli("logs", execution_id, "--task", task, "--json")
    assert out.returncode == 0, out.stderr
    return [line["line"] for line in json.loads(out.stdout)]


def runs(cli: Cli, execution_id: str) -> dict[str, list[dict[str, Any]]]:
    found: dict[str, list[dict[str, Any]]] = {}
    for run in cli.show(execution_id)["task_runs"]:
        found.setdefault(run["task_id"], []).append(run)
    return found


def run_flow(cli: Cli, tmp_path: Path, text: str, *args: str, expect: int = 0) -> str:
    out = cli("run", str(write_flow(tmp_path, text)), *args)
    assert out.returncode == expect, f"stdout:\n{out.stdout}\nstderr:\n{out.stderr}"
    assert "Traceback" not in out.stderr
    return execution_id_of(out.stdout)


# -- the acceptance flows of the Docker backend ------------------------------------------------


def test_hello_runs_on_a_node_and_info_lists_the_nodes(on_swarm: Cli, swarm: Swarm) -> None:
    execution_id = run_ok(on_swarm, ["run", str(REPO / "flows/hello.yml")])
    shown = on_swarm.show(execution_id)
    (hello,) = shown["task_runs"]
    assert (hello["state"], hello["exit_code"]) == ("SUCCESS", 0)
    assert hello["node"] in {"manager", "worker1", "worker2"}
    assert logs(on_swarm, execution_id, "hello")[1] == "task hello, attempt 1, workspace /workspace"
    assert left_behind(swarm, execution_id) == {}

    info = json.loads(on_swarm("info", "--json").stdout)
    assert info["backend"] == "swarm" and info["engine"]["name"] == "Docker Swarm"
    assert {n["name"]: (n["role"], n["state"]) for n in info["engine"]["nodes"]} == {
        "manager": ("manager", "ready"),
        "worker1": ("worker", "ready"),
        "worker2": ("worker", "ready"),
    }
    assert "task runs" in on_swarm("info").stdout


def test_fanout_join_shares_the_pinned_workspace(on_swarm: Cli, swarm: Swarm) -> None:
    execution_id = run_ok(on_swarm, ["run", str(REPO / "flows/fanout_join.yml")])
    found = runs(on_swarm, execution_id)
    assert logs(on_swarm, execution_id, "join") == ["total: 1501500"]
    # one workspace, so every task ran on its node
    assert len({r[0]["node"] for r in found.values()}) == 1
    assert left_behind(swarm, execution_id) == {}


def test_executions_spread_over_the_nodes(
    on_swarm: Cli, swarm: Swarm, store: Store, tmp_path: Path
) -> None:
    """Three executions, each started once the one before holds its node: least busy
    first puts them on three nodes (Swarm does not choose: each is pinned to its
    workspace's node, which the runner chose)."""
    flow = write_flow(
        tmp_path, f"id: spread\ntasks:\n- {{id: hold, image: {IMAGE}, command: 'sleep 10'}}\n"
    )
    procs = []
    for started in range(1, 4):
        procs.append(on_swarm.popen("run", str(flow)))
        _wait_for(
            f"execution {started} to hold its node",
            lambda n=started: (
                sum(
                    _task_state(store, e.id, "hold") == "RUNNING"
                    for e in api.list_executions(store).executions
                )
                >= n
            ),
        )
    ids = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        ids.append(execution_id_of(out))
    nodes = [runs(on_swarm, i)["hold"][0]["node"] for i in ids]
    assert sorted(nodes) == ["manager", "worker1", "worker2"], nodes
    for execution_id in ids:
        assert left_behind(swarm, execution_id) == {}


@pytest.fixture(scope="module")
def built_on_manager(swarm: Swarm, docker_client: Any) -> list[str]:
    """The polyglot flow's images, built on this machine's engine (cached) and loaded into
    the manager under their content-hash tags, so that the backend finds them there and
    only tags and pushes them (a build of their pip/npm layers in the manager would take
    minutes here)."""
    from runner.backends.docker import DockerBackend
    from runner.execution import BuildImage

    outer = DockerBackend(docker_client)
    tags = [outer.ensure_image(BuildImage(REPO / "images" / name)) for name in ("python", "node")]
    tags.append(outer.ensure_image(BuildImage(REPO / "images" / "shell")))
    load_images(docker_client, [swarm.manager.client], tags)
    return tags


def test_polyglot_builds_are_pushed_and_run_by_digest(
    on_swarm: Cli, swarm: Swarm, built_on_manager: list[str]
) -> None:
    out = on_swarm("run", str(REPO / "flows/polyglot_etl.yml"), "-i", "rows=120")
    assert out.returncode == 0, out.stderr
    execution_id = execution_id_of(out.stdout)
    pushed = {
        line.split("image=")[1].split()[0]
        for line in out.stderr.splitlines()
        if "image_pushed" in line
    }
    assert {p.split("@")[0] for p in pushed} == {
        f"{swarm.registry}/{tag.rsplit(':', 1)[0]}" for tag in built_on_manager
    }
    assert all("@sha256:" in p for p in pushed)
    assert (
        logs(on_swarm, execution_id, "report")[0]
        == "extract wrote 120 trips, zones.json sums to 120"
    )
    listed = json.loads(on_swarm("artifacts", execution_id, "--json").stdout)
    assert sorted(a["path"] for a in listed) == ["report/zones.json", "report/zones.tsv"]
    assert left_behind(swarm, execution_id) == {}
    # the node that ran them pulled them by digest from the registry
    node = swarm.node(runs(on_swarm, execution_id)["report"][0]["node"])
    digests = {d for image in node.client.images.list() for d in image.attrs["RepoDigests"]}
    assert pushed <= digests


def test_files_in_and_artifacts_out_of_100_mb(on_swarm: Cli, swarm: Swarm, tmp_path: Path) -> None:
    """A file input of 100 MB of random bytes (seeded through an image pushed to the
    registry: too big for configs), `files:` (through configs), and the 100 MB back as an
    artifact (through a helper's log, base64), byte for byte."""
    (tmp_path / "scripts").mkdir()
    (tmp_path / "scripts" / "make.sh").write_text(
        "#!/bin/sh\nmkdir -p out/sub\necho hello > out/a.txt\necho deep > out/sub/b.txt\n"
    )
    (tmp_path / "scripts" / "make.sh").chmod(0o755)
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(100 * 1024 * 1024))
    digest = hashlib.sha256(big.read_bytes()).hexdigest()
    execution_id = run_flow(
        on_swarm,
        tmp_path,
        """
id: files
inputs:
  - {id: data, type: file}
files: [scripts/*.sh]
tasks:
  - id: build
    image: debian:bookworm-slim
    user: "1000:1000"
    command: "./scripts/make.sh && sha256sum {{ inputs.data }} && cp {{ inputs.data }} out/copy.bin"
    artifacts: ["out/*.txt", "out/sub/", "out/copy.bin"]
""",
        "-i",
        "data=big.bin",
    )
    assert logs(on_swarm, execution_id, "build")[0].split()[0] == digest
    listed = {
        a["path"]: a for a in json.loads(on_swarm("artifacts", execution_id, "--json").stdout)
    }
    assert sorted(listed) == ["out/a.txt", "out/copy.bin", "out/sub/b.txt"]
    copy = Path(listed["out/copy.bin"]["local_path"])
    assert copy.stat().st_size == 100 * 1024 * 1024
    assert (
        hashlib.sha256(copy.read_bytes()).hexdigest() == digest == listed["out/copy.bin"]["sha256"]
    )
    assert Path(listed["out/sub/b.txt"]["local_path"]).read_text() == "deep\n"
    assert left_behind(swarm, execution_id) == {}


HOSTILE = {
    "symlink": ("ln -s /etc/passwd out/passwd", "link"),
    "hardlink": ("echo secret > out/secret && ln out/secret out/hard", "link"),
    "device": ("mknod out/null c 1 3", "device"),
    "fifo": ("mkfifo out/pipe", "fifo"),
    "huge": ("truncate -s 20G out/huge", "GiB"),
}
"""The hostile archives of tests/unit/test_archives.py, planted by tasks (one each)."""


def test_hostile_artifacts_are_refused(on_swarm: Cli, swarm: Swarm, tmp_path: Path) -> None:
    """Each planted member fails its task naming why, and nothing of it is copied. The
    20 GiB sparse file is refused before it is packed (it would pass through a log)."""
    tasks = "".join(
        f"""
  - id: {name}
    image: {IMAGE}
    depends_on: [start]
    command: "mkdir -p out/{name} && cd out/{name} && echo fine > ok.txt && {plant.replace("out/", "")}"
    artifacts: ["out/{name}/*"]
"""
        for name, (plant, _) in HOSTILE.items()
    )
    execution_id = run_flow(
        on_swarm,
        tmp_path,
        f"id: planted\ntasks:\n  - {{id: start, image: {IMAGE}, command: 'true'}}{tasks}",
        "--artifacts-dir",
        str(tmp_path / "arts"),
        expect=1,
    )
    found = runs(on_swarm, execution_id)
    for name, (_, complaint) in HOSTILE.items():
        (run,) = found[name]
        assert run["state"] == "FAILED" and complaint in run["error"], (name, run["error"])
    written = [p for p in (tmp_path / "arts").rglob("*") if p.is_file()]
    assert written == []  # nothing half-copied
    assert on_swarm("gc").returncode == 0  # the kept workspace of the failed execution
    assert left_behind(swarm, execution_id) == {}


def test_every_line_arrives_once_in_order(on_swarm: Cli, swarm: Swarm, tmp_path: Path) -> None:
    """Lines while the task runs and after it: 25,000 numbered lines in bursts on both
    streams, a line of 40,000 bytes (three 16 KiB frames), and a last line without a
    newline; read with a follow that Swarm lets stall, made whole by reads that end."""
    execution_id = run_flow(
        on_swarm,
        tmp_path,
        f"""
id: chatty
tasks:
  - id: talk
    image: {IMAGE}
    script: |
      for burst in 1 2 3 4 5; do
        seq $(( (burst - 1) * 5000 + 1 )) $(( burst * 5000 ))
        echo "burst $burst" >&2
        sleep 0.5
      done
      head -c 40000 /dev/zero | tr '\\0' x; echo
      printf 'last line without newline'
""",
    )
    lines = json.loads(on_swarm("logs", execution_id, "--json").stdout)
    stdout = [ln["line"] for ln in lines if ln["stream"] == "stdout"]
    stderr = [ln["line"] for ln in lines if ln["stream"] == "stderr"]
    assert stdout[:25_000] == [str(i) for i in range(1, 25_001)]
    assert stdout[25_000:] == ["x" * 40_000, "last line without newline"]
    assert stderr == [f"burst {i}" for i in range(1, 6)]
    assert left_behind(swarm, execution_id) == {}


def test_failures_retries_timeout_oom_and_a_missing_image(
    on_swarm: Cli, swarm: Swarm, tmp_path: Path
) -> None:
    begun = time.monotonic()
    execution_id = run_flow(
        on_swarm,
        tmp_path,
        f"""
id: failing
defaults: {{image: {IMAGE}, allow_failure: true}}
tasks:
  - {{id: start, command: "true", allow_failure: false}}
  - id: flaky
    depends_on: [start]
    command: 'echo attempt $RUNNER_ATTEMPT; test $RUNNER_ATTEMPT -ge 3'
    retry: {{attempts: 3, delay: 1s, backoff: 2}}
  - {{id: bad, depends_on: [start], command: exit 3, retry: {{attempts: 3, on_exit_codes: [1]}}}}
  - {{id: sleepy, depends_on: [start], command: 'echo zzz; sleep 300', timeout: 2s}}
  - {{id: hog, depends_on: [start], memory: 16m, command: head -c 200m /dev/zero | tail}}
  - {{id: ghost, depends_on: [start], image: {swarm.registry}/no/such/image, command: "true"}}
""",
    )
    took = time.monotonic() - begun
    found = runs(on_swarm, execution_id)
    assert [(r["attempt"], r["state"], r["exit_code"]) for r in found["flaky"]] == [
        (1, "RETRYING", 1),
        (2, "RETRYING", 1),
        (3, "SUCCESS", 0),
    ]
    assert [(r["state"], r["exit_code"]) for r in found["bad"]] == [("FAILED", 3)]
    (sleepy,) = found["sleepy"]
    assert (sleepy["state"], sleepy["error"]) == ("FAILED", "timed out after 2s")
    assert logs(on_swarm, execution_id, "sleepy") == ["zzz"]
    (hog,) = found["hog"]
    assert (hog["state"], hog["error"]) == ("FAILED", "killed: out of memory (OOM, limit 16m)")
    (ghost,) = found["ghost"]
    assert ghost["state"] == "FAILED" and "No such image" in ghost["error"], ghost["error"]
    assert on_swarm.show(execution_id)["state"] == "WARNING"
    assert took < 60, took  # the missing image failed fast, the timeout stopped at once
    assert left_behind(swarm, execution_id) == {}


def test_ctrl_c_kills_and_leaves_nothing_behind(
    on_swarm: Cli, swarm: Swarm, tmp_path: Path
) -> None:
    flow = write_flow(
        tmp_path,
        f"""
id: long
defaults: {{image: {IMAGE}}}
tasks:
  - {{id: one, command: "echo started; sleep 300"}}
  - {{id: two, workspace: false, command: "sleep 300"}}
  - {{id: after, depends_on: [one, two], command: "echo never"}}
""",
    )
    proc = on_swarm.popen("run", str(flow))
    assert proc.stdout is not None
    execution_id = execution_id_of(proc.stdout.readline())
    store = open_store(on_swarm.db_url)
    try:
        for task in ("one", "two"):
            _wait_for(
                f"{task} to run", lambda t=task: _task_state(store, execution_id, t) == "RUNNING"
            )
    finally:
        store.close()
    _wait_for("one's line", lambda: logs(on_swarm, execution_id, "one") == ["started"])
    sent = time.monotonic()
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=90)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert time.monotonic() - sent < 30
    found = runs(on_swarm, execution_id)
    assert {task: r[0]["state"] for task, r in found.items()} == {"one": "KILLED", "two": "KILLED"}
    assert logs(on_swarm, execution_id, "one") == ["started"]
    assert left_behind(swarm, execution_id) == {}


def test_runner_kill_then_restart_reruns_everything(
    on_swarm: Cli, swarm: Swarm, store: Store, tmp_path: Path
) -> None:
    flow = write_flow(
        tmp_path,
        f"id: rk\ntasks:\n- {{id: first, image: {IMAGE}, command: 'echo one'}}\n"
        f"- id: nap\n  image: {IMAGE}\n  depends_on: [first]\n"
        "  command: 'test \"$RUNNER_ATTEMPT\" -ge 2 || sleep 300'\n",
    )
    proc = on_swarm.popen("run", str(flow))
    try:
        _wait_for("the execution", lambda: bool(api.list_executions(store).executions))
        execution_id = _only_execution(store)
        _wait_for("nap to run", lambda: _task_state(store, execution_id, "nap") == "RUNNING")
        begun = time.monotonic()
        killed = on_swarm("kill", execution_id[:8])
        assert killed.returncode == 0, killed.stderr
        assert f"execution {execution_id} KILLED" in killed.stdout
        assert time.monotonic() - begun < 20
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert left_behind(swarm, execution_id) == {}
    again = on_swarm("restart", execution_id)
    assert again.returncode == 0, again.stderr
    assert "rerunning 2 task run(s) from its first task: its workspace is gone" in again.stdout
    assert {
        t: [(r["attempt"], r["state"]) for r in rs]
        for t, rs in runs(on_swarm, execution_id).items()
    } == {
        "first": [(1, "SUCCESS"), (2, "SUCCESS")],
        "nap": [(1, "KILLED"), (2, "SUCCESS")],
    }
    assert left_behind(swarm, execution_id) == {}


def test_restart_reuses_outputs_and_the_kept_workspace(
    on_swarm: Cli, swarm: Swarm, tmp_path: Path
) -> None:
    flow = write_flow(tmp_path, RESTARTABLE)
    first = on_swarm("run", str(flow))
    assert first.returncode == 1, first.stderr
    execution_id = execution_id_of(first.stdout)
    token = runs(on_swarm, execution_id)["make"][0]["outputs"]["token"]
    # the failed execution's workspace, kept on its node (and the config recording where)
    node = runs(on_swarm, execution_id)["make"][0]["node"]
    assert left_behind(swarm, execution_id).keys() == {"configs", f"volumes@{node}"}
    again = on_swarm("restart", execution_id)
    assert again.returncode == 0, again.stderr
    assert f"execution {execution_id}: rerunning 2 task run(s), reusing 2" in again.stdout
    assert logs(on_swarm, execution_id, "check")[-2:] == ["made by attempt 1", f"token={token}"]
    assert left_behind(swarm, execution_id) == {}


def test_a_crashed_runner_is_recovered_and_its_task_adopted(
    on_swarm: Cli, swarm: Swarm, store: Store, tmp_path: Path
) -> None:
    execution_id = _start_and_crash(on_swarm, store, write_flow(tmp_path, COUNTING), "count", 5)
    out = on_swarm("recover", execution_id[:10])
    assert out.returncode == 0, out.stderr
    assert "followed count to the end" in out.stdout
    count = runs(on_swarm, execution_id)["count"][0]
    assert (count["state"], count["exit_code"], count["outputs"]) == (
        "SUCCESS",
        0,
        {"counted": 100},
    )
    # every line once, in order: those stored before the crash and those read after it
    assert logs(on_swarm, execution_id, "count")[:100] == [f"line {i}" for i in range(1, 101)]
    assert len(logs(on_swarm, execution_id, "count")) == 101
    assert not left_behind(swarm, execution_id).get("services")
    again = on_swarm("restart", execution_id)
    assert again.returncode == 0, again.stderr
    assert logs(on_swarm, execution_id, "last") == ["first", "counted 100"]
    assert left_behind(swarm, execution_id) == {}


# -- what only a swarm has -----------------------------------------------------------------------


def test_a_workspace_false_matrix_spreads_over_three_nodes(
    on_swarm: Cli, swarm: Swarm, tmp_path: Path
) -> None:
    execution_id = run_flow(
        on_swarm,
        tmp_path,
        f"""
id: wide
tasks:
  - id: part
    image: {IMAGE}
    workspace: false
    matrix: {{i: [1, 2, 3, 4, 5, 6, 7, 8, 9]}}
    command: 'sleep 3; echo part {{{{ matrix.i }}}}; test -e /workspace/anything || echo no workspace'
""",
        "--concurrency",
        "9",
    )
    found = runs(on_swarm, execution_id)
    assert len(found) == 9
    assert {r[0]["node"] for r in found.values()} == {"manager", "worker1", "worker2"}
    assert logs(on_swarm, execution_id, "part[i=5]") == ["part 5", "no workspace"]
    assert left_behind(swarm, execution_id) == {}


def test_constraints_place_the_workspace_and_refuse_what_no_node_meets_or_a_worker(
    on_swarm: Cli, swarm: Swarm, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    flow = f"id: placed\ntasks:\n- {{id: where, image: {IMAGE}, command: 'true'}}\n"
    monkeypatch.setenv("RUNNER_SWARM_CONSTRAINTS", "node.hostname==worker2")
    execution_id = run_flow(on_swarm, tmp_path, flow)
    assert runs(on_swarm, execution_id)["where"][0]["node"] == "worker2"
    monkeypatch.setenv("RUNNER_SWARM_CONSTRAINTS", "node.labels.pool==etl")
    out = on_swarm("run", str(tmp_path / "flow.yml"))
    assert out.returncode == 1
    assert "no Swarm node can take a new workspace" in out.stderr
    assert "node.labels.pool==etl" in out.stderr and "Traceback" not in out.stderr
    monkeypatch.setenv("RUNNER_SWARM_CONSTRAINTS", "node.colour==blue")
    out = on_swarm("run", str(tmp_path / "flow.yml"))
    assert out.returncode == 2 and "RUNNER_SWARM_CONSTRAINTS" in out.stderr
    monkeypatch.delenv("RUNNER_SWARM_CONSTRAINTS")
    monkeypatch.setenv("DOCKER_HOST", swarm.workers[0].url)
    out = on_swarm("run", str(tmp_path / "flow.yml"))
    assert out.returncode == 1 and "is not a Swarm manager" in out.stderr, out.stderr


def test_a_node_stopped_mid_run(
    on_swarm: Cli, swarm: Swarm, store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker holding the execution's workspace dies: its task run ends FAILED "node
    NODE down", `workspace: false` task runs that were there are retried on the other
    worker, the rest of the pinned execution cannot run; `runner restart` reruns it on
    the surviving worker from its first task, and `runner gc` removes the lost workspace
    once the node is back."""
    monkeypatch.setenv("RUNNER_SWARM_CONSTRAINTS", "node.role==worker")
    flow = write_flow(
        tmp_path,
        f"""
id: lost
defaults: {{image: {IMAGE}}}
tasks:
  - {{id: first, command: "echo first > /workspace/first.txt"}}
  - {{id: nap, depends_on: [first], command: "echo napping; test $RUNNER_ATTEMPT -ge 2 || sleep 300"}}
  - id: free
    depends_on: [first]
    workspace: false
    matrix: {{i: [1, 2, 3, 4, 5, 6]}}
    retry: {{attempts: 2, delay: 1s}}
    command: 'test $RUNNER_ATTEMPT -ge 2 || sleep 60; echo free'
  - {{id: after, depends_on: [nap], command: "cat /workspace/first.txt"}}
""",
    )
    proc = on_swarm.popen("run", str(flow))
    try:
        _wait_for("the execution", lambda: bool(api.list_executions(store).executions))
        execution_id = _only_execution(store)
        _wait_for("nap to run", lambda: _task_state(store, execution_id, "nap") == "RUNNING")
        _wait_for(
            "the free tasks to run",
            lambda: all(
                _task_state(store, execution_id, f"free[i={i}]") == "RUNNING" for i in range(1, 7)
            ),
        )
        placed = _running_tasks(swarm, execution_id, 7)  # nap and six free

        def nap_line_stored() -> bool:
            runs = [r for r in store.get_execution(execution_id).task_runs if r.task_id == "nap"]
            return bool(runs) and store.count_task_run_logs(runs[-1].id) >= 1

        # The line reaches the runner through the manager, which can lag many seconds
        # behind the task (docs/scale-out.md): the node dies once it is stored.
        _wait_for("nap's line to be stored", nap_line_stored, timeout=50)
        lost = swarm.node(next(node for name, node in placed.items() if "-nap-" in name))
        on_lost = [name for name, node in placed.items() if node == lost.node_id]
        swarm.stop_node(lost)
        stopped = time.monotonic()
        _, err = proc.communicate(timeout=180)
        noticed = time.monotonic() - stopped
    finally:
        proc.kill()
        proc.communicate()
    try:
        assert proc.returncode == 1, err
        found = runs(on_swarm, execution_id)
        (nap,) = found["nap"]
        assert nap["state"] == "FAILED" and f"node {lost.hostname} down" in nap["error"], nap
        assert nap["node"] == lost.hostname
        assert logs(on_swarm, execution_id, "nap") == ["napping"]
        assert found["after"][0]["state"] == "SKIPPED"
        moved = [r for r in found.values() if r[0]["task_id"].startswith("free") and len(r) == 2]
        assert len(moved) == sum("-free-" in name for name in on_lost) >= 1
        for first_try, second in moved:
            assert (
                first_try["state"] == "RETRYING"
                and f"node {lost.hostname} down" in first_try["error"]
            )
            assert second["state"] == "SUCCESS" and second["node"] not in (lost.hostname, "manager")
        print(f"node loss noticed {noticed:.1f} s after the kill")

        again = on_swarm("restart", execution_id)
        assert again.returncode == 0, again.stderr
        assert "its workspace is gone" in again.stdout
        rerun = runs(on_swarm, execution_id)
        assert rerun["after"][-1]["state"] == "SUCCESS"
        assert logs(on_swarm, execution_id, "after") == ["first"]
        assert {rerun[t][-1]["node"] for t in ("first", "nap", "after")} != {lost.hostname}
    finally:
        swarm.start_node(lost)
    gc = on_swarm("gc")
    assert gc.returncode == 0, gc.stderr
    assert f"@{lost.hostname}" in gc.stdout  # the workspace left on the lost node
    wait_until_clean(swarm, execution_id)


def _running_tasks(swarm: Swarm, execution_id: str, count: int) -> dict[str, str]:
    """Service name -> node id of the execution's running tasks, once `count` run."""
    label = f"io.runner.execution={execution_id}"
    placed: dict[str, str] = {}

    def running() -> bool:
        names = {s["ID"]: s["Spec"]["Name"] for s in swarm.api.services(filters={"label": label})}
        placed.clear()
        for task in swarm.api.tasks(filters={"label": label}):
            if task["Status"]["State"] == "running" and task["ServiceID"] in names:
                placed[names[task["ServiceID"]]] = task["NodeID"]
        return len(placed) >= count

    _wait_for(f"{count} running tasks", running, timeout=90)
    return placed


def test_kill_an_execution_whose_runner_died(
    on_swarm: Cli, swarm: Swarm, store: Store, tmp_path: Path
) -> None:
    """A runner SIGKILLed while its task runs; `runner kill` ends it from another process
    (stopping the orphaned service), and nothing is left."""
    flow = write_flow(
        tmp_path,
        f"id: kd\ntasks:\n- id: nap\n  image: {IMAGE}\n"
        "  command: 'echo one; echo two; echo three; sleep 300'\n",
    )
    execution_id = _start_and_crash(on_swarm, store, flow, "nap", 3)
    killed = on_swarm("kill", execution_id)
    assert killed.returncode == 0, killed.stderr
    record = store.get_execution(execution_id)
    assert record.state.value == "KILLED"
    (nap,) = record.task_runs
    assert (nap.state.value, nap.error) == ("KILLED", "killed by `runner kill`")
    wait_until_clean(swarm, execution_id)
