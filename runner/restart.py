"""What a restart reruns: pure logic over the plan and the task runs recorded so far.

`runner restart EXECUTION` reruns the task runs that did not succeed (failed, killed,
skipped, never started) and everything downstream of them; `--from TASK` also reruns
TASK and everything downstream of it. The others keep their result and outputs.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from runner import dag
from runner.errors import UsageError
from runner.execution import TaskResult, TaskState
from runner.messages import did_you_mean
from runner.store import TaskRunRecord


@dataclass(frozen=True)
class RestartPlan:
    reused: Mapping[str, TaskResult]  # node id -> its successful result, kept
    rerun: tuple[str, ...]  # node ids that run again, in plan order
    first_attempt: Mapping[str, int]  # node id -> the attempt number its rerun starts at
    workspace_gone: bool = False  # its workspace was removed or lost: everything reruns


def plan_restart(
    plan: dag.Plan, runs: Iterable[TaskRunRecord], *, from_task: str | None = None
) -> RestartPlan:
    """Split `plan` into what is reused and what runs again.

    Raises UsageError if `from_task` is not a task of the flow's `tasks:`."""
    latest = latest_attempts(runs)
    again = {
        node_id
        for node_id in plan.order
        if node_id not in latest or latest[node_id].state is not TaskState.SUCCESS
    }
    if from_task is not None:
        starts = plan.nodes_of(from_task)
        if not starts:
            known = sorted({plan.nodes[n].task_id for n in plan.order})
            listed = ", ".join(known[:20]) + (", ..." if len(known) > 20 else "")
            raise UsageError(
                f"--from {from_task!r}: the flow has no such task"
                f"{did_you_mean(from_task, known)} (its tasks: {listed})"
            )
        again.update(starts)
    for node_id in list(again):
        again.update(plan.descendants(node_id))
    reused = {node_id: _result(latest[node_id]) for node_id in plan.order if node_id not in again}
    return RestartPlan(
        reused=reused,
        rerun=tuple(n for n in plan.order if n in again),
        # Handlers (`errors:`, `finally:`) run again too: number theirs on as well.
        first_attempt={task_id: run.attempt + 1 for task_id, run in latest.items()},
    )


def latest_attempts(runs: Iterable[TaskRunRecord]) -> dict[str, TaskRunRecord]:
    """The last attempt of each task run (node id), whatever order `runs` come in."""
    latest: dict[str, TaskRunRecord] = {}
    for run in runs:
        seen = latest.get(run.task_id)
        if seen is None or run.attempt >= seen.attempt:
            latest[run.task_id] = run
    return latest


def _result(run: TaskRunRecord) -> TaskResult:
    return TaskResult(
        task_id=run.task_id,
        attempt=run.attempt,
        state=run.state,
        exit_code=run.exit_code,
        error=run.error,
        started_at=run.started_at,
        ended_at=run.ended_at,
        container_id=run.container_id,
        outputs=dict(run.outputs or {}),
    )
