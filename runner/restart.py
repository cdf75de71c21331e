"""What a restart reruns, and what a resume keeps: pure logic over the plan and the task
runs recorded so far.

`runner restart EXECUTION` reruns the task runs that did not succeed (failed, killed,
skipped, never started) and everything downstream of them; `--from TASK` also reruns
TASK and everything downstream of it. The others keep their result and outputs.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from runner import dag
from runner.errors import InputError, UsageError
from runner.execution import TaskResult, TaskState
from runner.flow import OnTimeout, Task
from runner.messages import did_you_mean
from runner.store import TaskRunRecord
from runner.values import coerce_value


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


# -- resuming a paused execution ---------------------------------------------------------------


@dataclass(frozen=True)
class ResumePlan:
    """What a resumed execution keeps: every task run that ended (success, skip, allowed
    failure), the pause task just settled, and the pause tasks still waiting."""

    done: Mapping[str, TaskResult]  # node id -> its result, kept
    resolved: Mapping[str, TaskResult]  # the pause task(s) settled now
    held: Mapping[str, TaskRunRecord]  # node id -> its task run, still PAUSED
    first_attempt: Mapping[str, int]


_KEPT = (TaskState.SUCCESS, TaskState.SKIPPED, TaskState.FAILED)


def plan_resume(
    plan: dag.Plan, runs: Iterable[TaskRunRecord], *, resolved: Mapping[str, TaskResult]
) -> ResumePlan:
    """Split a paused execution's task runs into kept results and waiting pause tasks;
    the nodes that never ran are left to the scheduler."""
    latest = latest_attempts(runs)
    done = {
        node_id: _result(run)
        for node_id, run in latest.items()
        if node_id in plan.nodes and node_id not in resolved and run.state in _KEPT
    }
    held = {
        node_id: run
        for node_id, run in latest.items()
        if node_id in plan.nodes and node_id not in resolved and run.state is TaskState.PAUSED
    }
    first_attempt = {task_id: run.attempt + 1 for task_id, run in latest.items()}
    return ResumePlan(done, dict(resolved), held, first_attempt)


def pick_paused_task(
    execution_id: str, waiting: Mapping[str, TaskRunRecord], task: str | None
) -> str:
    """The node id of the pause task to resume: `task`, or the only one waiting."""
    names = sorted(waiting)
    if task is not None:
        if task in waiting:
            return task
        hint = did_you_mean(task, names)
        raise UsageError(
            f"task {task!r} of execution {execution_id} is not paused{hint};"
            f" paused: {', '.join(names) or 'none'}"
        )
    if not names:
        raise UsageError(f"execution {execution_id} has no paused task")
    if len(names) > 1:
        raise UsageError(
            f"execution {execution_id} has {len(names)} paused tasks ({', '.join(names)}):"
            " say which one to resume (--task)"
        )
    return names[0]


def pause_outcome(task: Task, given: Mapping[str, Any], *, timed_out: bool = False) -> TaskResult:
    """How a pause task ends: resumed with `given` (values for the inputs it declares,
    which become its outputs; the others take their defaults), or timed out (FAILED, or
    resumed with the defaults if `on_timeout: resume`). InputError for a value that does
    not fit, an unknown name, or a required input missing."""
    if timed_out and task.on_timeout is not OnTimeout.RESUME:
        assert task.timeout is not None  # only a pause with a timeout times out
        error = f"timed out after {task.timeout.text} without being resumed"
        return TaskResult(task_id=task.id, attempt=0, state=TaskState.FAILED, error=error)
    declared = {spec.id: spec for spec in task.inputs}
    problems: list[str] = []
    for name in given:
        if name not in declared:
            hint = did_you_mean(name, declared) or (
                f"; it declares {', '.join(map(repr, declared))}"
                if declared
                else "; it declares no inputs"
            )
            problems.append(f"pause task {task.id!r}: unknown input {name!r}{hint}")
    outputs: dict[str, Any] = {}
    for spec in task.inputs:
        if spec.id in given:
            raw = given[spec.id]
        elif spec.default is not None:
            raw = spec.default
        elif spec.is_required and not timed_out:
            problems.append(
                f"pause task {task.id!r}: input {spec.id!r} is required: give it with"
                f" -i {spec.id}=VALUE"
            )
            continue
        else:
            outputs[spec.id] = None
            continue
        try:
            outputs[spec.id] = coerce_value(spec.type, raw, spec.values, spec.item_type)
        except ValueError as exc:
            problems.append(f"pause task {task.id!r}: input {spec.id!r}: {exc}")
    if problems:
        raise InputError("\n".join(problems))
    return TaskResult(task_id=task.id, attempt=0, state=TaskState.SUCCESS, outputs=outputs)
