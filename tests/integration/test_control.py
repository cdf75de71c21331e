"""Control of executions from other processes, with real containers: `runner kill`,
`runner restart [--from]`, a runner killed with SIGKILL and recovered by the next command
(its container adopted, or lost), `runner gc`, and flow-level concurrency between two
processes on SQLite and on Postgres."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from runner import api
from runner.store import Store, open_store
from tests.integration.helpers import Cli, execution_id_of, labelled, write_flow

IMAGE = "debian:bookworm-slim"


def _wait_for(what: str, check: Callable[[], bool], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def _only_execution(store: Store) -> str:
    found = api.list_executions(store).executions
    assert len(found) == 1, found
    return found[0].id


def _task_state(store: Store, execution_id: str, task_id: str) -> str | None:
    runs = [r for r in store.get_execution(execution_id).task_runs if r.task_id == task_id]
    return runs[-1].state.value if runs else None


@pytest.fixture
def store(cli: Cli) -> Iterator[Store]:
    opened = open_store(cli.db_url)
    yield opened
    opened.close()


def _finish(proc: subprocess.Popen[str], timeout: float = 60) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def test_kill_from_another_process(
    cli: Cli, store: Store, tmp_path: Path, docker_client: Any
) -> None:
    flow = write_flow(
        tmp_path,
        f"id: k\ntasks:\n- {{id: nap, image: {IMAGE}, command: 'echo started; sleep 300'}}\n"
        f"- {{id: after, image: {IMAGE}, command: 'echo never', depends_on: [nap]}}\n",
    )
    proc = cli.popen("run", str(flow))
    try:
        _wait_for("the execution", lambda: bool(api.list_executions(store).executions))
        execution_id = _only_execution(store)
        _wait_for("the task to run", lambda: _task_state(store, execution_id, "nap") == "RUNNING")
        begun = time.monotonic()
        killed = cli("kill", execution_id[:8])
        assert killed.returncode == 0, killed.stderr
        assert f"execution {execution_id} KILLED" in killed.stdout
        # the owner sees the request at its next heartbeat (2 s) and kills the container,
        # long before the 300 s sleep ends (the bound leaves room for a loaded machine)
        assert time.monotonic() - begun < 30
        code, _, err = _finish(proc)
    finally:
        proc.kill()
    assert code == 130, err
    record = store.get_execution(execution_id)
    assert record.state.value == "KILLED" and record.error == "killed by `runner kill`"
    (nap,) = record.task_runs
    assert (nap.state.value, nap.error) == ("KILLED", "killed by `runner kill`")
    assert labelled(docker_client, execution_id) == ([], [])
    again = cli("kill", execution_id)
    assert again.returncode == 1 and "already ended: KILLED" in again.stderr


RESTARTABLE = f"""
id: rs
tasks:
  - id: make
    image: {IMAGE}
    command: |
      echo "made by attempt $RUNNER_ATTEMPT" > /workspace/data.txt
      echo '::{{"outputs": {{"token": "'$(od -An -N4 -tx4 /dev/urandom | tr -d ' ')'"}}}}::'
  - id: check
    image: {IMAGE}
    depends_on: [make]
    command: |
      cat /workspace/data.txt
      echo "token={{{{ outputs.make.token }}}}"
      test "$RUNNER_ATTEMPT" -ge 2 || exit 3
  - id: report
    image: {IMAGE}
    depends_on: [check]
    command: echo report
  - id: side
    image: {IMAGE}
    command: echo side
"""


def _attempts(cli: Cli, execution_id: str) -> dict[str, list[tuple[int, str]]]:
    found: dict[str, list[tuple[int, str]]] = {}
    for run in cli.show(execution_id)["task_runs"]:
        found.setdefault(run["task_id"], []).append((run["attempt"], run["state"]))
    return found


def _lines(cli: Cli, execution_id: str, task_id: str) -> list[str]:
    out = cli("logs", execution_id, "--task", task_id, "--json")
    assert out.returncode == 0, out.stderr
    return [line["line"] for line in json.loads(out.stdout)]


def test_restart_reuses_outputs_and_workspace(cli: Cli, tmp_path: Path, docker_client: Any) -> None:
    flow = write_flow(tmp_path, RESTARTABLE)
    first = cli("run", str(flow))
    assert first.returncode == 1, first.stderr
    execution_id = execution_id_of(first.stdout)
    shown = cli.show(execution_id)
    token = next(r for r in shown["task_runs"] if r["task_id"] == "make")["outputs"]["token"]

    again = cli("restart", execution_id)
    assert again.returncode == 0, again.stderr
    assert f"execution {execution_id}: rerunning 2 task run(s), reusing 2" in again.stdout
    assert _attempts(cli, execution_id) == {
        "make": [(1, "SUCCESS")],
        "side": [(1, "SUCCESS")],
        "check": [(1, "FAILED"), (2, "SUCCESS")],
        "report": [(1, "SKIPPED"), (2, "SUCCESS")],
    }
    # the file `make` wrote in the kept workspace, and its output, from before the restart
    assert _lines(cli, execution_id, "check")[-2:] == ["made by attempt 1", f"token={token}"]
    assert cli.show(execution_id)["state"] == "SUCCESS"
    assert labelled(docker_client, execution_id) == ([], [])  # removed after success

    refused = cli("restart", execution_id)
    assert refused.returncode == 2 and "is SUCCESS" in refused.stderr


def test_restart_from_a_task(cli: Cli, tmp_path: Path) -> None:
    flow = write_flow(tmp_path, RESTARTABLE)
    execution_id = execution_id_of(cli("run", str(flow)).stdout)
    unknown = cli("restart", execution_id, "--from", "mkae")
    assert unknown.returncode == 2 and "did you mean 'make'" in unknown.stderr
    again = cli("restart", execution_id, "--from", "make")
    assert again.returncode == 0, again.stderr
    attempts = _attempts(cli, execution_id)
    assert attempts["make"] == [(1, "SUCCESS"), (2, "SUCCESS")]
    assert attempts["side"] == [(1, "SUCCESS")]
    outputs = [
        r["outputs"]["token"] for r in cli.show(execution_id)["task_runs"] if r["task_id"] == "make"
    ]
    assert _lines(cli, execution_id, "check")[-2:] == ["made by attempt 2", f"token={outputs[1]}"]


def test_restart_after_a_kill_reruns_everything(cli: Cli, store: Store, tmp_path: Path) -> None:
    flow = write_flow(
        tmp_path,
        f"id: rk\ntasks:\n- {{id: first, image: {IMAGE}, command: 'echo one'}}\n"
        f"- id: nap\n  image: {IMAGE}\n  depends_on: [first]\n"
        "  command: 'test \"$RUNNER_ATTEMPT\" -ge 2 || sleep 300'\n",
    )
    proc = cli.popen("run", str(flow))
    try:
        _wait_for("the execution", lambda: bool(api.list_executions(store).executions))
        execution_id = _only_execution(store)
        _wait_for("nap to run", lambda: _task_state(store, execution_id, "nap") == "RUNNING")
        proc.send_signal(signal.SIGTERM)
        code, _, err = _finish(proc)
    finally:
        proc.kill()
    assert code == 130, err
    again = cli("restart", execution_id)
    assert again.returncode == 0, again.stderr
    # the kill removed the workspace, so `first` (whose files are gone) runs again too
    assert "rerunning 2 task run(s)" in again.stdout
    assert _attempts(cli, execution_id) == {
        "first": [(1, "SUCCESS"), (2, "SUCCESS")],
        "nap": [(1, "KILLED"), (2, "SUCCESS")],
    }


COUNTING = f"""
id: crash
tasks:
  - id: first
    image: {IMAGE}
    command: echo first > /workspace/first.txt
  - id: count
    image: {IMAGE}
    depends_on: [first]
    command: |
      for i in $(seq 1 100); do echo "line $i"; sleep 0.2; done
      echo '::{{"outputs": {{"counted": 100}}}}::'
  - id: last
    image: {IMAGE}
    depends_on: [count]
    command: cat /workspace/first.txt; echo "counted {{{{ outputs.count.counted }}}}"
"""


def _start_and_crash(cli: Cli, store: Store, flow: Path, task_id: str, lines: int) -> str:
    """Run the flow in a subprocess and SIGKILL it once `task_id` stored `lines` lines."""
    proc = cli.popen("run", str(flow))
    try:
        _wait_for("the execution", lambda: bool(api.list_executions(store).executions))
        execution_id = _only_execution(store)

        def stored() -> bool:
            runs = [r for r in store.get_execution(execution_id).task_runs if r.task_id == task_id]
            return (
                bool(runs)
                and runs[-1].state.value == "RUNNING"
                and (store.count_task_run_logs(runs[-1].id) >= lines)
            )

        _wait_for(f"{task_id} to store {lines} lines", stored)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        proc.kill()
        proc.communicate()
    assert store.get_execution(execution_id).state.value == "RUNNING"
    return execution_id


def test_a_crashed_runner_is_recovered_by_the_next_command(
    cli: Cli, store: Store, tmp_path: Path, docker_client: Any
) -> None:
    execution_id = _start_and_crash(cli, store, write_flow(tmp_path, COUNTING), "count", 5)
    begun = time.monotonic()
    listed = cli("executions")
    # it does not wait for `count` to end (19 s away): a `runner recover` in the background
    # follows it (the bound leaves room for a loaded machine)
    assert listed.returncode == 0 and time.monotonic() - begun < 15, listed.stderr
    assert f"execution {execution_id}: its runner (pid" in listed.stderr
    assert "following it in the background" in listed.stderr
    _wait_for("the recovery", lambda: store.get_execution(execution_id).state.is_final)
    assert cli("recover").stdout.strip() == "nothing to recover"
    shown = cli.show(execution_id)
    count = next(r for r in shown["task_runs"] if r["task_id"] == "count")
    assert (count["state"], count["exit_code"], count["outputs"]) == (
        "SUCCESS",
        0,
        {"counted": 100},
    )
    # every line once, in order: those stored before the crash and those read after it
    assert _lines(cli, execution_id, "count")[:100] == [f"line {i}" for i in range(1, 101)]
    assert len(_lines(cli, execution_id, "count")) == 101
    assert shown["state"] == "FAILED"  # `last` never ran
    assert "died" in shown["error"] and f"runner restart {execution_id}" in shown["error"]
    containers, volumes = labelled(docker_client, execution_id)
    assert containers == [] and len(volumes) == 1  # the workspace is kept for a restart

    again = cli("restart", execution_id)
    assert again.returncode == 0, again.stderr
    assert _lines(cli, execution_id, "last") == ["first", "counted 100"]
    assert labelled(docker_client, execution_id) == ([], [])


def test_a_crashed_runner_whose_container_is_gone(
    cli: Cli, store: Store, tmp_path: Path, docker_client: Any
) -> None:
    flow = write_flow(
        tmp_path,
        f"id: lost\ntasks:\n- id: nap\n  image: {IMAGE}\n"
        "  command: 'for i in 1 2 3; do echo tick $i; done; sleep 300'\n",
    )
    execution_id = _start_and_crash(cli, store, flow, "nap", 3)
    containers, _ = labelled(docker_client, execution_id)
    for container in containers:  # the machine rebooted, someone ran `docker rm -f`
        container.remove(force=True)
    shown = cli("show", execution_id)
    assert "recovered execution" in shown.stderr and "lost nap" in shown.stderr
    record = store.get_execution(execution_id)
    (nap,) = record.task_runs
    assert nap.state.value == "FAILED" and "died; its container is gone" in (nap.error or "")
    assert record.state.value == "FAILED"
    assert [ln.line for ln in store.get_logs(execution_id)] == ["tick 1", "tick 2", "tick 3"]

    assert len(labelled(docker_client, execution_id)[1]) == 1  # the kept workspace
    dry = cli("gc", "--dry-run")
    assert dry.returncode == 0 and "would remove 0 container(s) and 1 volume(s)" in dry.stdout
    gc = cli("gc")
    assert gc.returncode == 0, gc.stderr
    assert f"removed volume runner-ws-{execution_id}" in gc.stdout
    assert labelled(docker_client, execution_id) == ([], [])


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def shared_cli(request: pytest.FixtureRequest, cli: Cli) -> Iterator[Cli]:
    """A CLI whose database is SQLite or a fresh Postgres database."""
    if request.param == "sqlite":
        yield cli
        return
    yield Cli(cwd=cli.cwd, db_url=request.getfixturevalue("postgres_database_url"))


def _window(run: dict[str, Any]) -> tuple[datetime, datetime]:
    return datetime.fromisoformat(run["started_at"]), datetime.fromisoformat(run["ended_at"])


@contextmanager
def _first_running(cli: Cli, flow: Path) -> Iterator[tuple[Store, subprocess.Popen[str]]]:
    """A store on the CLI's database and a `runner run` of `flow` that has taken its slot."""
    assert cli("db", "upgrade").returncode == 0
    store = open_store(cli.db_url)
    first = cli.popen("run", str(flow))
    try:
        _wait_for(
            "the first to run",
            lambda: [e.state.value for e in api.list_executions(store).executions] == ["RUNNING"],
        )
        yield store, first
    finally:
        gate = flow.parent / "gate"
        if gate.is_dir():  # a gated task must not wait forever after a failed test
            (gate / "open").touch()
        first.kill()
        first.wait()
        store.close()


def _limited(tmp_path: Path, concurrency: str) -> Path:
    """A flow whose one task waits until the test opens its gate (`_open_gate`): however
    slowly a loaded machine starts the second process, the first is still running."""
    (tmp_path / "gate").mkdir(exist_ok=True)
    return write_flow(
        tmp_path,
        f"id: limited\nconcurrency: {concurrency}\n"
        f"tasks:\n- {{id: nap, image: {IMAGE}, volumes: ['./gate:/gate:ro'],"
        " command: 'until [ -e /gate/open ]; do sleep 0.2; done'}\n",
    )


def _open_gate(tmp_path: Path) -> None:
    (tmp_path / "gate" / "open").touch()


def test_two_processes_queue_on_the_flow_limit(shared_cli: Cli, tmp_path: Path) -> None:
    cli = shared_cli
    flow = _limited(tmp_path, "{limit: 1, behavior: queue}")
    with _first_running(cli, flow) as (store, first):
        second = cli.popen("run", str(flow))
        try:
            _wait_for(
                "the second to queue",
                lambda: (
                    sorted(e.state.value for e in api.list_executions(store).executions)
                    == ["QUEUED", "RUNNING"]
                ),
            )
            _open_gate(tmp_path)
            results = [_finish(first), _finish(second)]
        finally:
            second.kill()
    assert [code for code, _, _ in results] == [0, 0], results
    ids = [execution_id_of(out) for _, out, _ in results]
    (a,), (b,) = (cli.show(i)["task_runs"] for i in ids)
    assert _window(a)[1] <= _window(b)[0], (a, b)  # one after the other


@pytest.mark.parametrize(("behavior", "state"), [("cancel", "CANCELLED"), ("fail", "FAILED")])
def test_over_the_limit_cancel_or_fail(cli: Cli, tmp_path: Path, behavior: str, state: str) -> None:
    flow = _limited(tmp_path, f"{{limit: 1, behavior: {behavior}}}")
    with _first_running(cli, flow) as (_, first):
        refused = cli("run", str(flow))
        _open_gate(tmp_path)
        code, _, err = _finish(first)
    assert code == 0, err
    assert refused.returncode == 1, refused.stderr
    shown = cli.show(execution_id_of(refused.stdout))
    assert shown["state"] == state and shown["task_runs"] == []
    assert "concurrency limit is 1" in shown["error"]


def test_kill_a_queued_execution(cli: Cli, tmp_path: Path) -> None:
    flow = _limited(tmp_path, "{limit: 1}")
    with _first_running(cli, flow) as (store, first):
        second = cli.popen("run", str(flow))
        try:
            _wait_for(
                "the second to queue",
                lambda: any(
                    e.state.value == "QUEUED" for e in api.list_executions(store).executions
                ),
            )
            queued = next(
                e.id for e in api.list_executions(store).executions if e.state.value == "QUEUED"
            )
            killed = cli("kill", queued)
            assert killed.returncode == 0, killed.stderr
            assert _finish(second)[0] == 130
            _open_gate(tmp_path)
        finally:
            second.kill()
        assert store.get_execution(queued).task_runs == ()
        assert _finish(first)[0] == 0


def test_recover_in_the_foreground_records_the_adopted_exit_code(
    cli: Cli, store: Store, tmp_path: Path, docker_client: Any
) -> None:
    flow = write_flow(
        tmp_path,
        f"id: fg\ntasks:\n- id: work\n  image: {IMAGE}\n"
        "  command: 'echo a; echo b; echo c; sleep 3; echo d >&2; exit 4'\n",
    )
    execution_id = _start_and_crash(cli, store, flow, "work", 3)
    out = cli("recover", execution_id[:10])
    assert out.returncode == 0, out.stderr
    assert f"recovered execution {execution_id}" in out.stdout
    assert "followed work to the end; now FAILED" in out.stdout
    (work,) = store.get_execution(execution_id).task_runs
    assert (work.state.value, work.exit_code, work.error) == ("FAILED", 4, "exited with code 4")
    assert [(ln.stream, ln.line) for ln in store.get_logs(execution_id)] == [
        ("stdout", "a"),
        ("stdout", "b"),
        ("stdout", "c"),
        ("stderr", "d"),
    ]
    assert labelled(docker_client, execution_id)[0] == []


def test_kill_an_execution_whose_runner_died(
    cli: Cli, store: Store, tmp_path: Path, docker_client: Any
) -> None:
    flow = write_flow(
        tmp_path,
        f"id: kd\ntasks:\n- id: nap\n  image: {IMAGE}\n"
        "  command: 'echo one; echo two; echo three; sleep 300'\n",
    )
    execution_id = _start_and_crash(cli, store, flow, "nap", 3)
    (dead,) = store.active_leases(execution_id, lease_s=30)
    # a read command hands the running task to a background `runner recover`...
    listed = cli("executions")
    assert "following it in the background" in listed.stderr
    _wait_for(
        "the background recovery to take the lease",
        lambda: store.active_leases(execution_id, lease_s=30)[0].token != dead.token,
        timeout=30,
    )
    # ...which obeys `runner kill` like the runner it replaced
    begun = time.monotonic()
    killed = cli("kill", execution_id)
    assert killed.returncode == 0, killed.stderr
    assert time.monotonic() - begun < 15
    record = store.get_execution(execution_id)
    assert record.state.value == "KILLED"
    (nap,) = record.task_runs
    assert (nap.state.value, nap.error) == ("KILLED", "killed by `runner kill`")
    _wait_for(
        "the containers and workspace to go",
        lambda: labelled(docker_client, execution_id) == ([], []),
        timeout=30,
    )
