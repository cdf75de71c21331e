"""Firing triggers: what a server does each tick, and what a backfill does once.

    fire_schedules(ctx, loaded, state, now)   a flow's schedules: the times due now
    fire_flow_triggers(ctx, loaded, ...)      a flow's flow triggers: upstream executions ended
    fire_webhook(ctx, loaded, trigger, ...)   one call of a webhook
    backfill(ctx, loaded, trigger, start, end)   every time of a schedule in [start, end)

Each takes a `Firing` context: the store, a `submit` function (a worker's, so the
executions run in the background) and a logger. A scheduled time is recorded with its
execution in one transaction, under a key unique per (namespace, flow, trigger, time in
UTC): two servers on one database, or a server and a backfill, run each time once; the
loser gets `AlreadyFiredError` and moves on. The same key, the upstream execution's id,
makes each upstream execution start a flow trigger once.

Rules, each for a reason:
- A schedule's executions do not overlap unless the flow's `concurrency.limit` is set
  (then the limit and its behaviour decide): while the last execution it started has not
  ended, its next times wait, and once it ends they are missed times, which
  `recover_missed` decides about, as after a server was down.
- While a flow is paused, its schedules' state does not move: on unpause the times it
  missed are owed, and `recover_missed` (as the file says at that moment) decides what
  runs. Its flow triggers skip what ended meanwhile.
- `stop_after`: once an execution a trigger started ends in one of those states, the
  trigger is disabled (recorded, with why) until the flow is unpaused.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from runner.errors import AlreadyFiredError, ConflictError, NotFoundError, RunnerError, UsageError
from runner.execution import ExecutionState
from runner.messages import did_you_mean
from runner.restart import latest_attempts
from runner.templating import TemplateContext, render_value
from runner.triggers.events import TriggerEvent, utc_key
from runner.triggers.models import FlowTrigger, ScheduleTrigger, WebhookTrigger
from runner.triggers.schedule import due_times

if TYPE_CHECKING:
    from runner.loader import LoadedFlow
    from runner.store import ExecutionRecord, FlowState, Store, TriggerState

__all__ = [
    "MAX_BACKFILL",
    "BackfillTime",
    "Firing",
    "Submit",
    "backfill",
    "fire_flow_triggers",
    "fire_schedules",
    "fire_webhook",
    "pick_schedule",
    "render_inputs",
    "webhook_key",
]

MAX_BACKFILL = 10_000
"""The most times one backfill runs (a range of a per-second schedule would be millions)."""

FLOW_TRIGGER_SLACK = timedelta(seconds=60)
"""How far back a flow trigger looks again for upstream executions: one whose end was
recorded late (its transaction committed after a later one was seen) is still found; the
fire key keeps each from starting twice."""

Submit = Callable[..., str]
"""`submit(loaded, inputs, trigger=event)` -> execution id (a worker's submit)."""


@dataclass(frozen=True)
class Firing:
    store: Store
    submit: Submit
    log: Any


# -- inputs and keys ------------------------------------------------------------------------


def render_inputs(
    loaded: LoadedFlow,
    trigger: ScheduleTrigger | WebhookTrigger | FlowTrigger,
    event: TriggerEvent,
) -> dict[str, Any]:
    """The trigger's `inputs:` rendered with `trigger.*` (and `flow.*`) of `event`."""
    flow = loaded.flow
    ctx = TemplateContext(
        flow={"id": flow.id, "namespace": flow.namespace, "revision": loaded.revision},
        trigger=event.template_values(),
    )
    return {
        name: render_value(value, ctx, where=f"triggers.{trigger.id}.inputs.{name}")
        for name, value in trigger.inputs.items()
    }


def webhook_key(loaded: LoadedFlow, trigger: WebhookTrigger) -> str:
    """The key of a webhook: literal, or its template rendered (`{{ secret('X') }}`).
    Raises a RunnerError (a TemplateError) if it cannot be rendered."""
    if not trigger.is_template:
        return trigger.key
    flow = loaded.flow
    ctx = TemplateContext(
        flow={"id": flow.id, "namespace": flow.namespace, "revision": loaded.revision}
    )
    key = render_value(trigger.key, ctx, where=f"triggers.{trigger.id}.key")
    return str(key).strip()


def _active(state: ExecutionState) -> bool:
    return not state.is_final


def _stopped(
    ctx: Firing,
    loaded: LoadedFlow,
    trigger: ScheduleTrigger | WebhookTrigger | FlowTrigger,
    state: TriggerState | None,
    now: datetime,
) -> bool:
    """Whether the trigger is disabled: by the file, by an earlier `stop_after`, or now,
    because the last execution it started ended in a `stop_after` state."""
    if trigger.disabled:
        return True
    if state is None:
        return False
    if state.disabled_at is not None:
        return True
    if not trigger.stop_after or state.execution_id is None:
        return False
    ended = ctx.store.execution_states([state.execution_id]).get(state.execution_id)
    if ended is None or ended not in trigger.stop_after:
        return False
    flow = loaded.flow
    reason = (
        f"stop_after: execution {state.execution_id} ended {ended.value}"
        f" (re-enabled by `runner unpause {flow.full_id}`)"
    )
    ctx.store.disable_trigger(flow.namespace, flow.id, trigger.id, reason=reason, at=now)
    ctx.log.warning("trigger_stopped", flow_id=flow.full_id, trigger_id=trigger.id, reason=reason)
    return True


def _start(
    ctx: Firing,
    loaded: LoadedFlow,
    trigger: ScheduleTrigger | WebhookTrigger | FlowTrigger,
    event: TriggerEvent,
    now: datetime,
) -> str | None:
    """Start one execution for `event`; None if another process fired it first or it
    could not start (logged: a bad input is the flow's problem, not the server's)."""
    flow = loaded.flow
    try:
        inputs = render_inputs(loaded, trigger, event)
        execution_id = ctx.submit(loaded, inputs, trigger=event)
    except AlreadyFiredError:
        return None
    except RunnerError as exc:
        ctx.log.error(
            "trigger_failed",
            flow_id=flow.full_id,
            trigger_id=trigger.id,
            fire_key=event.fire_key,
            error=str(exc),
        )
        return None
    ctx.store.advance_trigger(
        flow.namespace, flow.id, trigger.id, execution_id=execution_id, fired_at=now
    )
    ctx.log.info(
        "trigger_fired",
        flow_id=flow.full_id,
        trigger_id=trigger.id,
        type=event.type,
        execution_id=execution_id,
        **({"scheduled_at": utc_key(event.date)} if event.type == "schedule" else {}),
    )
    return execution_id


# -- schedules ---------------------------------------------------------------------------------


def fire_schedules(
    ctx: Firing, loaded: LoadedFlow, state: FlowState | None, now: datetime
) -> list[str]:
    """Fire what the flow's schedules owe at `now`; the ids of the executions started."""
    flow = loaded.flow
    started: list[str] = []
    schedules = [t for t in flow.triggers if isinstance(t, ScheduleTrigger)]
    if not schedules or (state is not None and state.paused_at is not None):
        return started
    states: Mapping[str, TriggerState] = state.triggers if state is not None else {}
    for trigger in schedules:
        trigger_state = states.get(trigger.id)
        if trigger_state is None:
            # First seen: nothing from before it existed is owed.
            ctx.store.init_trigger(flow.namespace, flow.id, trigger.id, at=now)
            continue
        if _stopped(ctx, loaded, trigger, trigger_state, now):
            continue
        started += _fire_schedule(ctx, loaded, trigger, trigger_state, now)
    return started


def _fire_schedule(
    ctx: Firing,
    loaded: LoadedFlow,
    trigger: ScheduleTrigger,
    state: TriggerState,
    now: datetime,
) -> list[str]:
    flow = loaded.flow
    one_at_a_time = flow.concurrency.limit is None
    if one_at_a_time and state.execution_id is not None:
        last = ctx.store.execution_states([state.execution_id]).get(state.execution_id)
        if last is not None and _active(last):
            return []  # its times wait for it to end (then they are missed times)
    due = due_times(trigger.schedule, state.last_at, now, trigger.recover_missed)
    started: list[str] = []
    for index, when in enumerate(due):
        execution_id = _start(ctx, loaded, trigger, TriggerEvent.scheduled(trigger.id, when), now)
        if execution_id is not None:
            started.append(execution_id)
        if one_at_a_time and index + 1 < len(due):
            # The rest wait for this one to end.
            ctx.store.advance_trigger(flow.namespace, flow.id, trigger.id, last_at=when)
            return started
    latest = trigger.schedule.latest_at_or_before(now)
    passed = max([*(t for t in due), *([latest] if latest is not None else [])], default=None)
    if passed is not None:
        ctx.store.advance_trigger(flow.namespace, flow.id, trigger.id, last_at=passed)
    return started


# -- flow triggers ----------------------------------------------------------------------------


def fire_flow_triggers(
    ctx: Firing,
    loaded: LoadedFlow,
    state: FlowState | None,
    now: datetime,
    seen: set[str],
) -> list[str]:
    """Start the flow once for each upstream execution that ended (in one of the states
    its flow triggers wait for) since each trigger last looked. `seen` (kept by the
    caller between ticks) spares asking the store again about one already handled."""
    flow = loaded.flow
    triggers = [t for t in flow.triggers if isinstance(t, FlowTrigger)]
    if not triggers:
        return []
    states: Mapping[str, TriggerState] = state.triggers if state is not None else {}
    paused = state is not None and state.paused_at is not None
    started: list[str] = []
    for trigger in triggers:
        trigger_state = states.get(trigger.id)
        if trigger_state is None or trigger_state.last_at is None:
            ctx.store.init_trigger(flow.namespace, flow.id, trigger.id, at=now)
            continue
        # Disabled or paused: what ends meanwhile is not owed (the cursor moves on).
        skipping = paused or _stopped(ctx, loaded, trigger, trigger_state, now)
        upstream = trigger.upstream
        ended = ctx.store.ended_executions(
            upstream.namespace, upstream.flow_id, since=trigger_state.last_at - FLOW_TRIGGER_SLACK
        )
        newest = trigger_state.last_at
        for record in ended:
            assert record.ended_at is not None  # ended executions have an end
            key = f"{flow.full_id}/{trigger.id}/{record.id}"
            if key in seen:
                continue
            seen.add(key)
            newest = max(newest, record.ended_at)
            if skipping or record.ended_at < trigger_state.created_at:
                continue  # ended before the trigger was first seen, or while it rested
            if record.state not in upstream.states:
                continue
            event = TriggerEvent(trigger.id, "flow", now, upstream=_upstream_of(record))
            execution_id = _start(ctx, loaded, trigger, event, now)
            if execution_id is not None:
                started.append(execution_id)
        if newest > trigger_state.last_at:
            ctx.store.advance_trigger(flow.namespace, flow.id, trigger.id, last_at=newest)
    return started


def _upstream_of(record: ExecutionRecord) -> dict[str, Any]:
    """What a flow trigger's `trigger.*` says of the upstream execution."""
    outputs = {
        node: dict(run.outputs)
        for node, run in latest_attempts(record.task_runs).items()
        if run.outputs
    }
    return {
        "execution_id": record.id,
        "namespace": record.namespace,
        "flow_id": record.flow_id,
        "state": record.state.value,
        "outputs": outputs,
    }


# -- webhooks -------------------------------------------------------------------------------


def fire_webhook(
    ctx: Firing,
    loaded: LoadedFlow,
    key: str,
    state: FlowState | None,
    *,
    body: Any,
    headers: Mapping[str, str],
    now: datetime,
) -> str:
    """Start the flow for a call of its webhook with `key`: the execution's id.
    NotFoundError if no enabled webhook of the flow has that key (the same answer as an
    unknown flow: a caller cannot probe which flows exist); ConflictError if the flow
    is paused. A bad input raises (the caller answers 422)."""
    import hmac

    flow = loaded.flow
    states: Mapping[str, TriggerState] = state.triggers if state is not None else {}
    for trigger in flow.triggers:
        if not isinstance(trigger, WebhookTrigger):
            continue
        try:
            expected = webhook_key(loaded, trigger)
        except RunnerError as exc:
            ctx.log.error(
                "webhook_key_failed", flow_id=flow.full_id, trigger_id=trigger.id, error=str(exc)
            )
            continue
        if not expected or not hmac.compare_digest(expected.encode(), key.encode()):
            continue
        if _stopped(ctx, loaded, trigger, states.get(trigger.id), now):
            break
        if state is not None and state.paused_at is not None:
            raise ConflictError(f"flow {flow.full_id} is paused: its triggers do not fire")
        event = TriggerEvent(trigger.id, "webhook", now, body=body, headers=dict(headers))
        inputs = render_inputs(loaded, trigger, event)
        execution_id = ctx.submit(loaded, inputs, trigger=event)
        ctx.store.advance_trigger(
            flow.namespace, flow.id, trigger.id, execution_id=execution_id, fired_at=now
        )
        ctx.log.info(
            "trigger_fired",
            flow_id=flow.full_id,
            trigger_id=trigger.id,
            type="webhook",
            execution_id=execution_id,
        )
        return execution_id
    raise NotFoundError("no such webhook")


# -- backfills -------------------------------------------------------------------------------


@dataclass(frozen=True)
class BackfillTime:
    """One time of a backfill: the execution started for it, or the one that ran it."""

    scheduled_at: datetime
    execution_id: str | None
    already_run: bool


def pick_schedule(loaded: LoadedFlow, trigger_id: str | None) -> ScheduleTrigger:
    """The schedule trigger `trigger_id`, or the flow's only one."""
    flow = loaded.flow
    schedules = [t for t in flow.triggers if isinstance(t, ScheduleTrigger)]
    names = [t.id for t in schedules]
    if trigger_id is not None:
        for trigger in schedules:
            if trigger.id == trigger_id:
                return trigger
        others = [t.id for t in flow.triggers]
        if trigger_id in others:
            raise UsageError(f"trigger {trigger_id!r} of flow {flow.full_id} is not a schedule")
        raise UsageError(
            f"flow {flow.full_id} has no schedule trigger {trigger_id!r}"
            f"{did_you_mean(trigger_id, names)}; its schedules: {', '.join(names) or 'none'}"
        )
    if not schedules:
        raise UsageError(f"flow {flow.full_id} has no schedule trigger to backfill")
    if len(schedules) > 1:
        raise UsageError(
            f"flow {flow.full_id} has {len(schedules)} schedules ({', '.join(names)}):"
            " say which one with --trigger"
        )
    return schedules[0]


def backfill_times(trigger: ScheduleTrigger, start: datetime, end: datetime) -> list[datetime]:
    """Every time of the schedule in [start, end), oldest first; a time without a zone is
    read in the trigger's. UsageError for an empty range or one past MAX_BACKFILL times."""
    zone = trigger.schedule.timezone
    begin = start if start.tzinfo is not None else start.replace(tzinfo=zone)
    until = end if end.tzinfo is not None else end.replace(tzinfo=zone)
    if until <= begin:
        raise UsageError(
            f"the end ({until.isoformat()}) must come after the start ({begin.isoformat()})"
        )
    times: list[datetime] = []
    for when in trigger.schedule.iter_between(begin, until):
        if len(times) == MAX_BACKFILL:
            raise UsageError(
                f"{trigger.cron!r} has more than {MAX_BACKFILL} times between"
                f" {begin.isoformat()} and {until.isoformat()}: backfill a shorter range"
            )
        times.append(when)
    return times


def backfill(
    ctx: Firing,
    loaded: LoadedFlow,
    trigger: ScheduleTrigger,
    times: Iterable[datetime],
    *,
    dry_run: bool,
    on_time: Callable[[BackfillTime], None] | None = None,
) -> list[BackfillTime]:
    """Start one execution per time, oldest first, except the times that already ran (by
    the schedule or an earlier backfill); with `dry_run` only say which would run."""
    flow = loaded.flow
    wanted = list(times)
    if not wanted:
        return []
    ran = ctx.store.fired_times(
        flow.namespace,
        flow.id,
        trigger.id,
        start=wanted[0],
        end=wanted[-1] + timedelta(microseconds=1),
    )
    result = []
    for when in wanted:
        key = when.astimezone(UTC)
        previous = ran.get(key)
        if previous is not None or dry_run:
            item = BackfillTime(when, previous, already_run=previous is not None)
        else:
            event = TriggerEvent.scheduled(trigger.id, when, backfill=True)
            try:
                inputs = render_inputs(loaded, trigger, event)
                execution_id: str | None = ctx.submit(loaded, inputs, trigger=event)
                item = BackfillTime(when, execution_id, already_run=False)
            except AlreadyFiredError as exc:
                item = BackfillTime(when, exc.execution_id, already_run=True)
        result.append(item)
        if on_time is not None:
            on_time(item)
    if not dry_run:
        ctx.log.info(
            "backfill_started",
            flow_id=flow.full_id,
            trigger_id=trigger.id,
            times=len(result),
            already_run=sum(1 for t in result if t.already_run),
        )
    return result
