"""The `triggers:` of a flow file as validated, immutable models.

    triggers:
      - {id: nightly, type: schedule, cron: "0 2 * * *", timezone: Europe/Paris}
      - {id: from_ci, type: webhook, key: "{{ secret('CI_WEBHOOK_KEY') }}"}
      - {id: after_load, type: flow, upstream: {namespace: zoomcamp, flow_id: load_taxi}}

`type` picks the model. Checks that need the whole flow (ids unique, `inputs` naming the
flow's inputs) are in `find_trigger_problems`, which the loader runs on a valid flow, so
each problem is reported on its own line. Nothing here fires a trigger.

`runner.flow` imports this module, so this one does not import `runner.flow`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from typing import Annotated, Any, Literal, Protocol

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    field_validator,
    model_validator,
)

from runner.errors import Loc
from runner.execution import ExecutionState
from runner.messages import did_you_mean, listing
from runner.triggers.schedule import RecoverMissed, Schedule, parse_timezone

__all__ = [
    "FINAL_STATES",
    "FlowTrigger",
    "ScheduleTrigger",
    "Trigger",
    "TriggerInputs",
    "Upstream",
    "WebhookTrigger",
    "find_trigger_problems",
]

# The same pattern as runner.flow.IDENTIFIER (the loader's message for a bad id keys on
# it; a test checks the two agree).
IDENTIFIER = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"
_Identifier = Annotated[str, Field(pattern=IDENTIFIER, max_length=200)]

FINAL_STATES = tuple(state for state in ExecutionState if state.is_final)
"""The states an execution ends in: what `stop_after` and `upstream.states` may name."""


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=False)


def _final_state(value: Any) -> Any:
    """`success` or `SUCCESS`: an execution state that ends an execution."""
    if not isinstance(value, str):
        return value
    names = [state.value for state in FINAL_STATES]
    upper = value.upper()
    if upper in names:
        return upper
    if upper in ExecutionState.__members__:
        raise ValueError(f"{value!r} is not a state an execution ends in; use {', '.join(names)}")
    raise ValueError(f"unknown state {value!r}{did_you_mean(upper, names)}; use {', '.join(names)}")


def _lower(value: Any) -> Any:
    return value.lower() if isinstance(value, str) else value


FinalState = Annotated[ExecutionState, BeforeValidator(_final_state)]


def _no_repeats(states: tuple[ExecutionState, ...]) -> tuple[ExecutionState, ...]:
    repeated = sorted({s.value for s in states if states.count(s) > 1})
    if repeated:
        raise ValueError(f"{', '.join(repeated)} is listed more than once")
    return states


States = Annotated[tuple[FinalState, ...], AfterValidator(_no_repeats)]

TriggerInputs = dict[Annotated[str, Field(min_length=1)], Any]
"""Input values for the executions a trigger starts, by input id. Strings are templates
(`{{ trigger.date | date('%m') }}`), rendered when the trigger fires."""


class _TriggerFields(_Model):
    id: _Identifier
    description: str | None = None
    inputs: TriggerInputs = Field(default_factory=dict)
    disabled: bool = False
    stop_after: States = ()
    """Disable the trigger once an execution it started ends in one of these states."""


class ScheduleTrigger(_TriggerFields):
    """Run the flow at the times of a cron expression, in a time zone.

    `recover_missed` defaults to `last`: after a server was down (or the flow paused),
    the most recent missed time runs once, so a nightly job still runs the morning
    after, while a stopped hourly schedule does not start a burst of executions for
    every hour it missed. `all` is for schedules whose every time matters; a backfill
    runs a chosen range on purpose.
    """

    type: Literal["schedule"]
    cron: str = Field(min_length=1)
    timezone: str = "UTC"
    recover_missed: Annotated[RecoverMissed, BeforeValidator(_lower)] = RecoverMissed.LAST
    _schedule: Schedule = PrivateAttr()

    # Each field is checked on its own, so a problem is reported on its own line; the
    # time zone does not change whether an expression is valid.
    @field_validator("cron")
    @classmethod
    def _check_cron(cls, value: str) -> str:
        Schedule.parse(value)
        return value

    @field_validator("timezone")
    @classmethod
    def _check_timezone(cls, value: str) -> str:
        parse_timezone(value)
        return value

    @model_validator(mode="after")
    def _build_schedule(self) -> ScheduleTrigger:
        self._schedule = Schedule.parse(self.cron, self.timezone)
        return self

    @property
    def schedule(self) -> Schedule:
        """The cron expression in its time zone: next times, times between two dates."""
        return self._schedule


# A literal key is the only secret guarding its URL (webhooks take no token), so it must
# be long enough not to be guessed, and it must fit in a URL path as it is.
MIN_WEBHOOK_KEY = 16
_URL_SAFE = re.compile(r"^[A-Za-z0-9._~-]+$")


class WebhookTrigger(_TriggerFields):
    """Run the flow when `POST /api/v1/webhooks/NAMESPACE/FLOW/KEY` is called.

    `key` is either literal text or a template (`{{ secret('CI_WEBHOOK_KEY') }}`),
    rendered when the server loads the flow.
    """

    type: Literal["webhook"]
    key: str = Field(min_length=1, max_length=256)

    @field_validator("key")
    @classmethod
    def _check_key(cls, key: str) -> str:
        if _is_template(key):
            return key
        if not _URL_SAFE.match(key):
            raise ValueError(
                "a webhook key goes into the URL as it is: use letters, digits, '.', '_', '~'"
                " and '-', or a template such as \"{{ secret('CI_WEBHOOK_KEY') }}\""
            )
        if len(key) < MIN_WEBHOOK_KEY:
            raise ValueError(
                f"a webhook key is the only secret guarding its URL: use at least"
                f" {MIN_WEBHOOK_KEY} characters (got {len(key)}), or a template such as"
                " \"{{ secret('CI_WEBHOOK_KEY') }}\""
            )
        return key

    @property
    def is_template(self) -> bool:
        """Whether `key` is rendered (from a secret, say) before it is compared."""
        return _is_template(self.key)


def _is_template(text: str) -> bool:
    return "{{" in text or "{%" in text


class Upstream(_Model):
    """The flow whose executions start this one, and the states they must end in."""

    namespace: _Identifier
    flow_id: _Identifier
    states: States = Field(default=(ExecutionState.SUCCESS,), min_length=1)

    @property
    def full_id(self) -> str:
        return f"{self.namespace}.{self.flow_id}"


class FlowTrigger(_TriggerFields):
    """Run the flow when an execution of another flow ends in one of `upstream.states`
    (SUCCESS unless said otherwise)."""

    type: Literal["flow"]
    upstream: Upstream


Trigger = Annotated[ScheduleTrigger | WebhookTrigger | FlowTrigger, Field(discriminator="type")]
"""One item of `triggers:`; its `type` says which."""

TRIGGER_TYPES = ("schedule", "webhook", "flow")


class _Input(Protocol):
    @property
    def id(self) -> str: ...
    @property
    def is_required(self) -> bool: ...


class _Flow(Protocol):
    """What `find_trigger_problems` reads of a `runner.flow.Flow`."""

    @property
    def id(self) -> str: ...
    @property
    def namespace(self) -> str: ...
    @property
    def inputs(self) -> Sequence[_Input]: ...
    @property
    def triggers(self) -> Sequence[ScheduleTrigger | WebhookTrigger | FlowTrigger]: ...


def find_trigger_problems(flow: _Flow) -> Iterator[tuple[Loc, str]]:
    """Problems of a valid flow's triggers that need the whole flow, with where they are:
    a repeated id, an input the flow does not have, a required input no trigger gives,
    a flow trigger waiting for its own flow."""
    first: dict[str, int] = {}
    inputs = {spec.id: spec for spec in flow.inputs}
    for index, trigger in enumerate(flow.triggers):
        if trigger.id in first:
            message = (
                f"duplicate trigger id {trigger.id!r} (first used by triggers[{first[trigger.id]}])"
            )
            yield ("triggers", index, "id"), message
        else:
            first[trigger.id] = index
        for name in trigger.inputs:
            if name not in inputs:
                known = f"; the flow's inputs are {listing(inputs)}" if inputs else ""
                hint = did_you_mean(name, inputs) or known or "; the flow declares no inputs"
                yield ("triggers", index, "inputs", name), f"unknown input {name!r}{hint}"
        missing = [
            name for name, spec in inputs.items() if spec.is_required and name not in trigger.inputs
        ]
        if missing and not trigger.disabled:
            names = ", ".join(map(repr, missing))
            noun = "input" if len(missing) == 1 else "inputs"
            yield (
                ("triggers", index),
                f"the flow's required {noun} {names} must be given in this trigger's `inputs`",
            )
        if isinstance(trigger, FlowTrigger) and (
            trigger.upstream.namespace,
            trigger.upstream.flow_id,
        ) == (flow.namespace, flow.id):
            yield (
                ("triggers", index, "upstream"),
                "a flow trigger cannot wait for its own flow: each execution would start the next",
            )
