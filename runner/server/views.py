"""Records of `runner.api` as the JSON shapes of `runner.server.schemas`: pure functions."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from runner.restart import latest_attempts
from runner.server import schemas
from runner.triggers.models import FlowTrigger, ScheduleTrigger, WebhookTrigger

if TYPE_CHECKING:
    from runner.flow import Flow, FlowInput, Task
    from runner.loader import LoadedFlow
    from runner.server.catalog import InvalidFile
    from runner.store import ExecutionRecord, FlowState, LogRecord, TriggerState

UPCOMING = 3
"""How many next times of a schedule a flow's document lists."""


def problem(p: Any) -> schemas.ProblemOut:
    return schemas.ProblemOut(
        file=p.file, line=p.line, column=p.column, field=p.field, message=p.message, text=str(p)
    )


def invalid_file(found: InvalidFile) -> schemas.InvalidFileOut:
    return schemas.InvalidFileOut(file=found.file, problems=[problem(p) for p in found.problems])


def trigger(
    item: ScheduleTrigger | WebhookTrigger | FlowTrigger,
    state: TriggerState | None,
    now: datetime,
    *,
    paused: bool,
) -> schemas.TriggerOut:
    disabled = item.disabled or (state is not None and state.disabled_at is not None)
    reason = None
    if item.disabled:
        reason = "disabled: true in the flow file"
    elif state is not None and state.disabled_at is not None:
        reason = state.disabled_reason
    fields: dict[str, Any] = {}
    if isinstance(item, ScheduleTrigger):
        upcoming = () if disabled or paused else item.schedule.upcoming(now, UPCOMING)
        fields = {
            "cron": item.cron,
            "timezone": item.timezone,
            "recover_missed": item.recover_missed.value,
            "next": list(upcoming),
        }
    elif isinstance(item, FlowTrigger):
        fields = {
            "upstream": {
                "namespace": item.upstream.namespace,
                "flow_id": item.upstream.flow_id,
                "states": [s.value for s in item.upstream.states],
            }
        }
    return schemas.TriggerOut(
        id=item.id,
        type=item.type,
        description=item.description,
        disabled=disabled,
        disabled_reason=reason,
        last_execution_id=state.execution_id if state is not None else None,
        **fields,
    )


def flow_summary(
    loaded: LoadedFlow,
    state: FlowState | None,
    now: datetime,
    last: ExecutionRecord | None = None,
) -> schemas.FlowSummary:
    return schemas.FlowSummary(**_summary_fields(loaded, state, now, last))


def _summary_fields(
    loaded: LoadedFlow, state: FlowState | None, now: datetime, last: ExecutionRecord | None
) -> dict[str, Any]:
    flow = loaded.flow
    paused_at = state.paused_at if state is not None else None
    states: Mapping[str, TriggerState] = state.triggers if state is not None else {}
    return {
        "namespace": flow.namespace,
        "id": flow.id,
        "description": flow.description,
        "labels": dict(flow.labels),
        "file": loaded.file,
        "revision": loaded.revision,
        "paused": paused_at is not None,
        "paused_at": paused_at,
        "tasks": len(flow.tasks),
        "triggers": [
            trigger(t, states.get(t.id), now, paused=paused_at is not None) for t in flow.triggers
        ],
        "last_execution": (
            schemas.LastExecution(id=last.id, state=last.state.value, created_at=last.created_at)
            if last is not None
            else None
        ),
    }


def flow_detail(
    loaded: LoadedFlow,
    state: FlowState | None,
    now: datetime,
    last: ExecutionRecord | None = None,
) -> schemas.FlowDetail:
    flow = loaded.flow
    return schemas.FlowDetail(
        **_summary_fields(loaded, state, now, last),
        source=loaded.source,
        inputs=[flow_input(spec) for spec in flow.inputs],
        graph=_graph(flow),
    )


def flow_input(spec: FlowInput) -> schemas.InputOut:
    return schemas.InputOut(
        id=spec.id,
        type=spec.type.value,
        description=spec.description,
        required=spec.is_required,
        default=spec.default,
        values=list(spec.values) if spec.values is not None else None,
        item_type=spec.item_type.value if spec.item_type is not None else None,
    )


def _graph(flow: Flow) -> list[schemas.TaskOut]:
    groups: list[tuple[Literal["tasks", "errors", "finally"], tuple[Task, ...]]] = [
        ("tasks", flow.tasks),
        ("errors", flow.errors),
        ("finally", flow.finally_),
    ]
    sequential = not any(task.depends_on for task in flow.tasks)
    out = []
    for group, tasks in groups:
        for index, task in enumerate(tasks):
            depends_on = list(task.depends_on)
            if group == "tasks" and sequential and index:
                depends_on = [tasks[index - 1].id]  # a flow without depends_on runs in order
            out.append(
                schemas.TaskOut(
                    id=task.id,
                    type=task.type.value,
                    description=task.description,
                    image=task.image,
                    depends_on=depends_on,
                    matrix={k: list(v) for k, v in task.matrix.items()} if task.matrix else None,
                    group=group,
                    inputs=[flow_input(spec) for spec in task.inputs],
                )
            )
    return out


def execution_flow(loaded: LoadedFlow) -> schemas.ExecutionFlow:
    flow = loaded.flow
    return schemas.ExecutionFlow(
        namespace=flow.namespace,
        id=flow.id,
        revision=loaded.revision,
        source=loaded.source,
        inputs=[flow_input(spec) for spec in flow.inputs],
        graph=_graph(flow),
    )


def execution(record: ExecutionRecord) -> dict[str, Any]:
    """The document of `runner show --json`."""
    return record.to_dict()


def execution_summary(record: ExecutionRecord) -> dict[str, Any]:
    """The execution document without its task runs (built directly: a page of the list
    is on the hot path), with the task runs counted by state (latest attempts)."""
    counts = Counter(run.state.value for run in latest_attempts(record.task_runs).values())
    return {
        "id": record.id,
        "flow_id": record.flow_id,
        "namespace": record.namespace,
        "revision": record.revision,
        "inputs": record.inputs,
        "labels": record.labels,
        "state": record.state.value,
        "error": record.error,
        "created_at": _iso(record.created_at),
        "started_at": _iso(record.started_at),
        "ended_at": _iso(record.ended_at),
        "duration_s": record.duration_s,
        "trigger": record.trigger,
        "task_states": dict(sorted(counts.items())),
    }


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


def log_line(line: LogRecord) -> dict[str, Any]:
    return {
        "id": line.id,
        "task_run_id": line.task_run_id,
        "task_id": line.task_id,
        "stream": line.stream,
        "time": line.time.isoformat(),
        "line": line.line,
    }
