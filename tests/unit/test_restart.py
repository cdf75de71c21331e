"""Restarts and flow concurrency without an engine: what a restart reruns (pure), the
scheduler resuming from it (scripted FakeBackend, in-memory store), and the
`concurrency:` field."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from runner import dag
from runner.api import restart_execution, run_flow
from runner.backends.fake import FakeBackend, Script
from runner.errors import FlowError, UsageError
from runner.execution import ExecutionState, TaskState
from runner.flow import ConcurrencyBehavior
from runner.lease import Owner
from runner.loader import LoadedFlow, parse_flow
from runner.restart import plan_restart
from runner.store import Store, TaskRunRecord
from runner.store.testing import InMemoryStore

T0 = datetime(2024, 5, 1, tzinfo=UTC)

DIAMOND = """
id: d
defaults: {image: i}
tasks:
  - {id: a}
  - {id: b, depends_on: [a]}
  - {id: c, depends_on: [a]}
  - {id: d, depends_on: [b, c]}
  - {id: side}
"""


@pytest.fixture
def store() -> Iterator[InMemoryStore]:
    with InMemoryStore() as s:
        yield s


def _load(text: str, tmp_path: Path) -> LoadedFlow:
    return parse_flow(text, path=tmp_path / "flow.yml")


def _run(task_id: str, attempt: int, state: TaskState, **outputs: object) -> TaskRunRecord:
    return TaskRunRecord(
        id=0,
        execution_id="e",
        task_id=task_id,
        attempt=attempt,
        state=state,
        exit_code=0,
        image="i",
        container_id=None,
        error=None,
        outputs=outputs or None,
        created_at=T0,
        started_at=T0,
        ended_at=T0,
    )


def test_restart_reruns_what_did_not_succeed_and_its_downstream(tmp_path: Path) -> None:
    plan = dag.build_plan(_load(DIAMOND, tmp_path).flow)
    runs = [
        _run("a", 1, TaskState.SUCCESS, n=1),
        _run("side", 1, TaskState.SUCCESS),
        _run("b", 1, TaskState.RETRYING),
        _run("b", 2, TaskState.FAILED),
        _run("c", 1, TaskState.SUCCESS),
        _run("d", 1, TaskState.SKIPPED),
    ]
    restart = plan_restart(plan, runs)
    assert set(restart.reused) == {"a", "c", "side"}
    assert restart.reused["a"].outputs == {"n": 1}
    assert restart.rerun == ("b", "d")
    assert (restart.first_attempt["b"], restart.first_attempt["d"]) == (3, 2)
    assert restart.first_attempt.get("never-ran", 1) == 1

    from_a = plan_restart(plan, runs, from_task="a")
    assert set(from_a.reused) == {"side"}
    with pytest.raises(UsageError, match="'x': the flow has no such task"):
        plan_restart(plan, runs, from_task="x")


def test_progress_skips_what_is_done(tmp_path: Path) -> None:
    plan = dag.build_plan(_load(DIAMOND, tmp_path).flow)
    progress = dag.Progress(plan, done={"a", "c", "side"})
    assert progress.take_ready(10) == ["b"]
    progress.succeeded("b")
    assert progress.take_ready(10) == ["d"]


def test_restart_resumes_with_new_attempts_and_reused_outputs(store: Store, tmp_path: Path) -> None:
    backend = FakeBackend(
        {
            "a": Script(lines=('::{"outputs": {"n": 7}}::',)),
            "b": Script(exit_codes=(1,), exit_code=0),
        }
    )
    text = DIAMOND.replace(
        "{id: d, depends_on: [b, c]}",
        "{id: d, depends_on: [b, c], command: 'echo {{ outputs.a.n }}'}",
    )
    first = run_flow(_load(text, tmp_path), store=store, backend=backend)
    assert first.state is ExecutionState.FAILED
    assert backend.volumes  # kept after the failure: the restart reuses it
    second = restart_execution(first.execution_id, store=store, backend=backend)
    assert second.state is ExecutionState.SUCCESS
    rows = [
        (r.task_id, r.attempt, r.state) for r in store.get_execution(first.execution_id).task_runs
    ]
    assert rows.count(("a", 1, TaskState.SUCCESS)) == 1 and ("a", 2, TaskState.SUCCESS) not in rows
    assert ("b", 1, TaskState.FAILED) in rows and ("b", 2, TaskState.SUCCESS) in rows
    assert ("d", 1, TaskState.SKIPPED) in rows and ("d", 2, TaskState.SUCCESS) in rows
    started_d = [s for s in backend.started if s.env["RUNNER_TASK_ID"] == "d"][-1]
    assert started_d.command == ("/bin/sh", "-c", "echo 7")
    assert started_d.env["RUNNER_ATTEMPT"] == "2"
    with pytest.raises(UsageError, match="is SUCCESS"):
        restart_execution(first.execution_id, store=store, backend=backend)


def test_restart_without_the_workspace_reruns_everything(store: Store, tmp_path: Path) -> None:
    backend = FakeBackend({"b": Script(exit_codes=(1,), exit_code=0)})
    first = run_flow(_load(DIAMOND, tmp_path), store=store, backend=backend)
    backend.volumes.clear()  # what `runner gc` or a kill does
    before = len(backend.started)
    second = restart_execution(first.execution_id, store=store, backend=backend)
    assert second.state is ExecutionState.SUCCESS
    reran = {s.env["RUNNER_TASK_ID"] for s in backend.started[before:]}
    assert reran == {"a", "b", "c", "d", "side"}


@pytest.mark.parametrize(
    ("text", "limit", "behavior", "tasks"),
    [
        ("concurrency: 4", None, ConcurrencyBehavior.QUEUE, 4),
        ("concurrency: {limit: 1}", 1, ConcurrencyBehavior.QUEUE, None),
        ("concurrency: {limit: 2, behavior: CANCEL, tasks: 3}", 2, ConcurrencyBehavior.CANCEL, 3),
        ("concurrency: {limit: 1, behavior: fail}", 1, ConcurrencyBehavior.FAIL, None),
    ],
)
def test_concurrency_forms(
    text: str, limit: int | None, behavior: ConcurrencyBehavior, tasks: int | None, tmp_path: Path
) -> None:
    flow = _load(f"id: f\n{text}\ntasks: [{{id: a, image: i}}]\n", tmp_path).flow
    assert (flow.concurrency.limit, flow.concurrency.behavior, flow.concurrency.tasks) == (
        limit,
        behavior,
        tasks,
    )


@pytest.mark.parametrize(
    ("text", "field", "message"),
    [
        ("concurrency: {limit: 0}", "concurrency.limit", "at least 1"),
        ("concurrency: {limit: 1, behavior: wait}", "concurrency.behavior", "queue"),
        ("concurrency: {limt: 1}", "concurrency.limt", "unknown"),
    ],
)
def test_bad_concurrency_names_the_field(
    text: str, field: str, message: str, tmp_path: Path
) -> None:
    with pytest.raises(FlowError) as caught:
        _load(f"id: f\n{text}\ntasks: [{{id: a, image: i}}]\n", tmp_path)
    (problem,) = caught.value.problems
    assert (problem.line, problem.field) == (2, field)
    assert message in problem.message


def test_cancel_behavior_refuses_a_second_execution(store: Store, tmp_path: Path) -> None:
    flow = _load(
        "id: f\nconcurrency: {limit: 1, behavior: cancel}\ntasks: [{id: a, image: i}]\n", tmp_path
    )
    holder = run_flow(flow, store=store, backend=FakeBackend())
    assert holder.state is ExecutionState.SUCCESS  # the slot is free again afterwards
    # Hold the slot with a running execution of the same flow.
    blocker = "b" * 32
    store.create_execution(
        execution_id=blocker,
        flow_id="f",
        namespace="default",
        revision="r",
        source="",
        inputs={},
        labels={},
        owner=Owner.here(),
    )
    store.set_execution_state(blocker, ExecutionState.RUNNING)
    refused = run_flow(flow, store=store, backend=FakeBackend())
    assert refused.state is ExecutionState.CANCELLED
    record = store.get_execution(refused.execution_id)
    assert blocker in (record.error or "") and "limit is 1" in (record.error or "")
