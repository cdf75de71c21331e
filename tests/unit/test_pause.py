"""The `pause` task: an execution waits in state PAUSED (no container, no thread, its
workspace kept) until it is resumed, with inputs that become the task's outputs, or its
timeout passes; killed while paused, it ends KILLED. FakeBackend and the in-memory store."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from runner import api
from runner.backends.fake import FakeBackend, Script
from runner.errors import ConflictError, FlowError, InputError, UsageError
from runner.execution import ExecutionState, TaskState
from runner.loader import parse_flow
from runner.store.testing import InMemoryStore

APPROVAL = """\
id: deploy
tasks:
  - {id: build, image: i}
  - id: approve
    type: pause
    depends_on: [build]
    timeout: 1h
    on_timeout: ON_TIMEOUT
    inputs:
      - {id: reason, type: string, default: none given}
      - {id: replicas, type: int, default: 1}
  - id: ship
    image: i
    depends_on: [approve]
    command: "echo {{ outputs.approve.reason }} x{{ outputs.approve.replicas }}"
  - {id: side, image: i}
finally:
  - {id: report, image: i}
"""


@pytest.fixture
def store() -> Iterator[InMemoryStore]:
    with InMemoryStore() as opened:
        yield opened


@pytest.fixture
def backend() -> FakeBackend:
    return FakeBackend()


def run(
    tmp_path: Path, store: InMemoryStore, backend: FakeBackend, on_timeout: str = "fail"
) -> str:
    loaded = parse_flow(APPROVAL.replace("ON_TIMEOUT", on_timeout), path=tmp_path / "deploy.yml")
    result = api.run_flow(loaded, store=store, backend=backend)
    assert result.state is ExecutionState.PAUSED
    return result.execution_id


def states(store: InMemoryStore, execution_id: str) -> dict[str, str]:
    record = api.get_execution(store, execution_id)
    return {run.task_id: run.state.value for run in record.task_runs}


def test_a_pause_task_holds_the_execution_with_no_thread_and_its_workspace_kept(
    tmp_path: Path, store: InMemoryStore, backend: FakeBackend
) -> None:
    threads = threading.active_count()
    execution_id = run(tmp_path, store, backend)
    # `side` does not wait for the pause and ran; `ship` and the handlers wait.
    assert states(store, execution_id) == {
        "build": "SUCCESS",
        "approve": "PAUSED",
        "side": "SUCCESS",
    }
    assert f"fake-ws-{execution_id}" in backend.volumes
    assert threading.active_count() <= threads  # run_flow returned: nothing holds it
    record = api.get_execution(store, execution_id)
    assert record.state is ExecutionState.PAUSED and record.ended_at is None


def test_resume_with_inputs_makes_them_outputs_and_runs_the_rest(
    tmp_path: Path, store: InMemoryStore, backend: FakeBackend
) -> None:
    execution_id = run(tmp_path, store, backend)
    resumed: list[tuple[str, str]] = []
    result = api.resume_execution(
        execution_id[:8],
        {"reason": "looks good", "replicas": "3"},
        store=store,
        backend=backend,
        on_resumed=lambda e, t: resumed.append((e, t)),
    )
    assert result.state is ExecutionState.SUCCESS
    assert resumed == [(execution_id, "approve")]
    record = api.get_execution(store, execution_id)
    approve = next(r for r in record.task_runs if r.task_id == "approve")
    assert (approve.state, dict(approve.outputs or {})) == (
        TaskState.SUCCESS,
        {"reason": "looks good", "replicas": 3},
    )
    ship = next(s for s in backend.started if s.env["RUNNER_TASK_ID"] == "ship")
    assert "echo looks good x3" in " ".join(ship.command or ())
    # Every task ran once: build and side were not run again.
    assert sorted(s.env["RUNNER_TASK_ID"] for s in backend.started) == [
        "build",
        "report",
        "ship",
        "side",
    ]
    assert f"fake-ws-{execution_id}" not in backend.volumes
    with pytest.raises(ConflictError, match="only a PAUSED execution can be resumed"):
        api.resume_execution(execution_id, store=store, backend=backend)


def test_resume_refuses_inputs_the_pause_task_does_not_declare_or_cannot_read(
    tmp_path: Path, store: InMemoryStore, backend: FakeBackend
) -> None:
    execution_id = run(tmp_path, store, backend)
    with pytest.raises(InputError) as caught:
        api.resume_execution(
            execution_id, {"reson": "x", "replicas": "many"}, store=store, backend=backend
        )
    assert str(caught.value).splitlines() == [
        "pause task 'approve': unknown input 'reson' (did you mean 'reason'?)",
        "pause task 'approve': input 'replicas': expected an int, got 'many'",
    ]
    with pytest.raises(UsageError, match=r"task 'bild' of execution \w+ is not paused"):
        api.resume_execution(execution_id, task="bild", store=store, backend=backend)
    assert api.get_execution(store, execution_id).state is ExecutionState.PAUSED


@pytest.mark.parametrize(
    ("on_timeout", "state", "ship"),
    [("fail", ExecutionState.FAILED, "SKIPPED"), ("resume", ExecutionState.SUCCESS, "SUCCESS")],
)
def test_a_timed_out_pause_ends_as_on_timeout_says(
    tmp_path: Path,
    store: InMemoryStore,
    backend: FakeBackend,
    on_timeout: str,
    state: ExecutionState,
    ship: str,
) -> None:
    execution_id = run(tmp_path, store, backend, on_timeout)
    paused_at = next(
        r.started_at
        for r in api.get_execution(store, execution_id).task_runs
        if r.task_id == "approve"
    )
    assert paused_at is not None
    worker = api.Worker(store, backend=backend)
    try:
        assert api.expire_pauses(store, worker, now=paused_at + timedelta(minutes=59)) == []
        [taken] = api.expire_pauses(store, worker, now=paused_at + timedelta(hours=1))
        assert worker.wait(taken, timeout=30).state is state
    finally:
        worker.shutdown()
    after = states(store, execution_id)
    assert after["ship"] == ship and after["report"] == "SUCCESS"
    if on_timeout == "fail":
        approve = next(
            r for r in api.get_execution(store, execution_id).task_runs if r.task_id == "approve"
        )
        assert approve.error == "timed out after 1h without being resumed"


def test_killing_a_paused_execution_ends_it_and_removes_its_workspace(
    tmp_path: Path, store: InMemoryStore, backend: FakeBackend
) -> None:
    execution_id = run(tmp_path, store, backend)
    assert api.kill_execution(execution_id, store=store, backend=backend, wait_s=1) is (
        ExecutionState.KILLED
    )
    assert states(store, execution_id)["approve"] == "KILLED"
    assert f"fake-ws-{execution_id}" not in backend.volumes
    with pytest.raises(ConflictError):
        api.resume_execution(execution_id, store=store, backend=backend)


def test_a_failure_elsewhere_ends_the_execution_and_its_pause(
    tmp_path: Path, store: InMemoryStore, backend: FakeBackend
) -> None:
    backend.scripts["side"] = Script(exit_code=2)
    loaded = parse_flow(APPROVAL.replace("ON_TIMEOUT", "fail"), path=tmp_path / "deploy.yml")
    result = api.run_flow(loaded, store=store, backend=backend)
    assert result.state is ExecutionState.FAILED
    record = api.get_execution(store, result.execution_id)
    approve = next(r for r in record.task_runs if r.task_id == "approve")
    assert approve.state is TaskState.SKIPPED
    assert approve.error == "the execution ended (a task failed) before it was resumed"


def test_two_pauses_resume_one_at_a_time(
    tmp_path: Path, store: InMemoryStore, backend: FakeBackend
) -> None:
    text = """\
id: two
tasks:
  - {id: a, type: pause}
  - {id: b, type: pause}
  - {id: after, image: i, depends_on: [a, b]}
"""
    loaded = parse_flow(text, path=tmp_path / "two.yml")
    execution_id = api.run_flow(loaded, store=store, backend=backend).execution_id
    with pytest.raises(UsageError, match=r"has 2 paused tasks \(a, b\): say which one"):
        api.resume_execution(execution_id, store=store, backend=backend)
    first = api.resume_execution(execution_id, task="a", store=store, backend=backend)
    assert first.state is ExecutionState.PAUSED
    assert states(store, execution_id) == {"a": "SUCCESS", "b": "PAUSED"}
    second = api.resume_execution(execution_id, store=store, backend=backend)
    assert second.state is ExecutionState.SUCCESS
    assert states(store, execution_id)["after"] == "SUCCESS"


@pytest.mark.parametrize(
    ("task", "message"),
    [
        (
            "{id: p, type: pause, image: x}",
            "a pause task runs no container: remove `image`",
        ),
        ("{id: p, image: x, on_timeout: fail}", "`on_timeout` only applies to tasks of type pause"),
        (
            "{id: p, type: pause, inputs: [{id: f, type: file}]}",
            "a pause task's inputs cannot be files",
        ),
    ],
)
def test_pause_tasks_are_checked_when_the_flow_loads(
    tmp_path: Path, task: str, message: str
) -> None:
    with pytest.raises(FlowError, match=message):
        parse_flow(f"id: f\ntasks:\n  - {task}\n", path=tmp_path / "f.yml")


def test_defaults_do_not_reach_a_pause_task(tmp_path: Path) -> None:
    loaded = parse_flow(
        "id: f\ndefaults: {image: x, retry: {attempts: 2}}\n"
        "tasks:\n  - {id: p, type: pause}\n  - {id: a}\n",
        path=tmp_path / "f.yml",
    )
    assert loaded.flow.task("p").image is None and loaded.flow.task("a").image == "x"
