"""Ordering, skipping, concurrency and cancel, against the scripted FakeBackend and the
in-memory store. What containers themselves do is tested in tests/integration."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from runner.api import run_flow
from runner.backends.fake import FakeBackend, Script
from runner.execution import ExecutionState, TaskState
from runner.loader import parse_flow
from runner.store import Store
from runner.store.testing import InMemoryStore


@pytest.fixture
def store() -> Iterator[InMemoryStore]:
    with InMemoryStore() as s:
        yield s


def _load(text: str, tmp_path: Path):
    return parse_flow(text, path=tmp_path / "flow.yml")


def test_sequential_flow_runs_in_file_order(store: Store, tmp_path: Path) -> None:
    backend = FakeBackend({t: Script(lines=(f"hi from {t}",), seconds=0.01) for t in "abc"})
    flow = _load(
        "id: f\ntasks:\n- {id: c, image: i}\n- {id: a, image: i}\n- {id: b, image: i}\n", tmp_path
    )
    result = run_flow(flow, store=store, backend=backend)
    assert result.state is ExecutionState.SUCCESS
    assert [s.env["RUNNER_TASK_ID"] for s in backend.started] == ["c", "a", "b"]
    assert [ln.line for ln in store.get_logs(result.execution_id)] == [
        "hi from c",
        "hi from a",
        "hi from b",
    ]
    assert backend.volumes == set()  # workspace removed after success


def test_failure_skips_downstream_and_independent_branch_finishes(
    store: Store, tmp_path: Path
) -> None:
    backend = FakeBackend({"bad": Script(exit_code=3)})
    flow = _load(
        """
id: f
defaults: {image: i}
tasks:
  - {id: bad}
  - {id: after_bad, depends_on: [bad]}
  - {id: after_after, depends_on: [after_bad]}
  - {id: other}
  - {id: after_other, depends_on: [other]}
""",
        tmp_path,
    )
    result = run_flow(flow, store=store, backend=backend)
    states = {t.task_id: t.state for t in result.tasks}
    assert result.state is ExecutionState.FAILED
    assert states == {
        "bad": TaskState.FAILED,
        "after_bad": TaskState.SKIPPED,
        "after_after": TaskState.SKIPPED,
        "other": TaskState.SUCCESS,
        "after_other": TaskState.SUCCESS,
    }
    record = store.get_execution(result.execution_id)
    runs = {r.task_id: r for r in record.task_runs}
    assert runs["bad"].exit_code == 3 and runs["bad"].error == "exited with code 3"
    assert runs["after_bad"].error == "upstream task 'bad' failed"
    assert runs["after_after"].error == "upstream task 'bad' failed"
    assert record.state == "FAILED"
    assert len(backend.volumes) == 1  # workspace kept after a failure


def test_where_each_task_run_ran_is_recorded_and_a_workspace_false_task_has_none(
    store: Store, tmp_path: Path
) -> None:
    backend = FakeBackend()
    backend.node = "worker2"
    flow = _load(
        "id: f\ntasks:\n- {id: bound, image: i}\n- {id: free, image: i, workspace: false}\n",
        tmp_path,
    )
    result = run_flow(flow, store=store, backend=backend)
    assert result.ok and {t.node for t in result.tasks} == {"worker2"}
    assert [r.node for r in store.get_execution(result.execution_id).task_runs] == [
        "worker2",
        "worker2",
    ]
    bound, free = backend.started
    assert bound.workspace is not None and free.workspace is None


def test_concurrency_limit_is_respected(store: Store, tmp_path: Path) -> None:
    backend = FakeBackend({f"t{i}": Script(seconds=1.0) for i in range(6)})
    tasks = "".join(f"- {{id: t{i}, image: i, depends_on: [root]}}\n" for i in range(6))
    flow = _load(f"id: f\ntasks:\n- {{id: root, image: i}}\n{tasks}", tmp_path)
    result = run_flow(flow, store=store, backend=backend, concurrency=3)
    assert result.ok
    # Three at a time: never more, and not one after another either.
    assert backend.max_running == 3


def test_a_backend_keeping_no_history_forgets_each_container_once_removed(
    store: Store, tmp_path: Path
) -> None:
    backend = FakeBackend(keep_history=False)
    tasks = "".join(f"- {{id: t{i}, image: i, depends_on: [root]}}\n" for i in range(20))
    flow = _load(f"id: f\ntasks:\n- {{id: root, image: i}}\n{tasks}", tmp_path)
    result = run_flow(flow, store=store, backend=backend, concurrency=4)
    assert result.ok and len(result.tasks) == 21
    assert backend.started == [] and backend.removed == [] and backend.list_managed() == []


def test_backend_start_error_fails_the_task_with_its_message(store: Store, tmp_path: Path) -> None:
    backend = FakeBackend({"a": Script(exit_code=-1)})
    flow = _load("id: f\ntasks:\n- {id: a, image: i}\n- {id: b, image: i}\n", tmp_path)
    result = run_flow(flow, store=store, backend=backend)
    assert [(t.task_id, t.state) for t in result.tasks] == [
        ("a", TaskState.FAILED),
        ("b", TaskState.SKIPPED),
    ]
    assert "scripted failure" in (result.tasks[0].error or "")


def test_cancel_kills_running_tasks_and_records_killed(store: Store, tmp_path: Path) -> None:
    backend = FakeBackend({"slow": Script(seconds=30), "fast": Script()})
    flow = _load(
        "id: f\ntasks:\n- {id: fast, image: i}\n- {id: slow, image: i}\n- {id: never, image: i}\n",
        tmp_path,
    )
    from runner.scheduler import RunOptions, Scheduler
    from runner.store import LogWriter

    store.create_execution(
        execution_id="x" * 32,
        flow_id="f",
        namespace="default",
        revision="r",
        source="",
        inputs={},
        labels={},
    )
    writer = LogWriter(store)
    scheduler = Scheduler(backend, store, writer)
    threading.Timer(0.5, scheduler.cancel).start()
    started = time.monotonic()
    result = scheduler.run("x" * 32, flow, {}, RunOptions(concurrency=2))
    writer.close()
    assert time.monotonic() - started < 5
    assert result.state is ExecutionState.KILLED
    states = {t.task_id: t.state for t in result.tasks}
    assert states == {"fast": TaskState.SUCCESS, "slow": TaskState.KILLED}
    assert store.get_execution("x" * 32).state == "KILLED"
    assert backend.volumes == set()
