"""The `triggers:` of a flow file: the models, and problems placed on file:line:column."""

from __future__ import annotations

import textwrap
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydantic import ValidationError

from runner.errors import FlowError, Problem
from runner.execution import ExecutionState
from runner.flow import IDENTIFIER, Flow
from runner.loader import LoadedFlow, parse_flow
from runner.triggers import models
from runner.triggers.models import (
    FINAL_STATES,
    FlowTrigger,
    ScheduleTrigger,
    Upstream,
    WebhookTrigger,
)
from runner.triggers.schedule import RecoverMissed

TASKS = "tasks: [{id: a, image: debian:bookworm-slim, command: [true]}]\n"


def parse(text: str) -> LoadedFlow:
    return parse_flow(textwrap.dedent(text), path=Path("/nonexistent/flow.yml"))


def problems(text: str) -> list[Problem]:
    with pytest.raises(FlowError) as caught:
        parse(text)
    return list(caught.value.problems)


def only(text: str) -> Problem:
    found = problems(text)
    assert len(found) == 1, "\n".join(map(str, found))
    return found[0]


def where(problem: Problem) -> tuple[int | None, int | None, str]:
    return problem.line, problem.column, problem.field


# --- the three kinds ------------------------------------------------------------------------

ISSUE_EXAMPLE = f"""\
id: monthly_load
namespace: zoomcamp
inputs:
  - {{id: month, type: string}}
triggers:
  - id: nightly
    type: schedule
    cron: "0 2 * * *"
    timezone: Europe/Paris
    inputs: {{month: "{{{{ trigger.date | date('%m') }}}}"}}
    recover_missed: last
    stop_after: [FAILED]
    disabled: false
  - id: from_ci
    type: webhook
    key: "{{{{ secret('CI_WEBHOOK_KEY') }}}}"
    inputs: {{month: "{{{{ trigger.body.month }}}}"}}
  - id: after_load
    type: flow
    upstream: {{namespace: zoomcamp, flow_id: load_taxi, states: [SUCCESS]}}
    inputs: {{month: "01"}}
{TASKS}"""


def test_the_issues_example_loads() -> None:
    flow = parse(ISSUE_EXAMPLE).flow
    nightly, from_ci, after_load = flow.triggers
    assert isinstance(nightly, ScheduleTrigger)
    assert nightly.timezone == "Europe/Paris"
    assert nightly.recover_missed is RecoverMissed.LAST
    assert nightly.stop_after == (ExecutionState.FAILED,)
    assert nightly.inputs == {"month": "{{ trigger.date | date('%m') }}"}
    assert nightly.schedule.next_after(datetime(2024, 6, 1, 12, tzinfo=UTC)) == datetime(
        2024, 6, 2, 2, tzinfo=nightly.schedule.timezone
    )
    assert isinstance(from_ci, WebhookTrigger) and from_ci.is_template
    assert isinstance(after_load, FlowTrigger)
    assert after_load.upstream == Upstream(
        namespace="zoomcamp", flow_id="load_taxi", states=(ExecutionState.SUCCESS,)
    )
    assert after_load.upstream.full_id == "zoomcamp.load_taxi"


def test_defaults() -> None:
    flow = parse(
        f"""\
        id: f
        triggers:
          - {{id: s, type: schedule, cron: "@daily"}}
          - {{id: w, type: webhook, key: abcdefghijklmnop}}
          - {{id: u, type: flow, upstream: {{namespace: n, flow_id: g}}}}
        {TASKS}"""
    ).flow
    schedule, webhook, upstream = flow.triggers
    assert isinstance(schedule, ScheduleTrigger)
    assert schedule.timezone == "UTC" and schedule.schedule.timezone.key == "UTC"
    # `last`: after an outage the latest missed time runs once, not a burst of them.
    assert schedule.recover_missed is RecoverMissed.LAST
    assert (schedule.stop_after, schedule.disabled, schedule.inputs) == ((), False, {})
    assert isinstance(webhook, WebhookTrigger) and not webhook.is_template
    assert isinstance(upstream, FlowTrigger)
    assert upstream.upstream.states == (ExecutionState.SUCCESS,)
    assert Flow.model_validate({"id": "f", "tasks": [{"id": "a", "image": "x"}]}).triggers == ()


def test_triggers_are_frozen_and_compare_by_value() -> None:
    data = {"id": "s", "type": "schedule", "cron": "0 2 * * *", "timezone": "Europe/Paris"}
    trigger = ScheduleTrigger.model_validate(data)
    with pytest.raises(ValidationError):
        trigger.cron = "0 3 * * *"  # type: ignore[misc]
    assert trigger == ScheduleTrigger.model_validate(data)
    assert trigger.schedule == ScheduleTrigger.model_validate(data).schedule


def test_states_are_read_in_any_case_and_only_final_ones() -> None:
    flow = parse(
        f"""\
        id: f
        triggers:
          - id: s
            type: schedule
            cron: "@hourly"
            recover_missed: ALL
            stop_after: [failed, Killed]
        {TASKS}"""
    ).flow
    trigger = flow.triggers[0]
    assert isinstance(trigger, ScheduleTrigger)
    assert trigger.recover_missed is RecoverMissed.ALL
    assert trigger.stop_after == (ExecutionState.FAILED, ExecutionState.KILLED)
    assert set(FINAL_STATES) == {s for s in ExecutionState if s.is_final}


def test_the_id_pattern_is_the_flows() -> None:
    assert models.IDENTIFIER == IDENTIFIER


# --- problems on their lines ------------------------------------------------------------------


_BAD_TRIGGERS = [
    # (the trigger, where the problem is in it (None: the item itself), field, message)
    (
        '{id: s, type: schedule, cron: "61 2 * * *"}',
        "cron:",
        "triggers[0] (s).cron",
        "cron '61 2 * * *': the minute field '61' is not valid; use 5 fields",
    ),
    (
        '{id: s, type: schedule, cron: "0 2 * *"}',
        "cron:",
        "triggers[0] (s).cron",
        "has 4 fields; use 5 fields (minute hour day-of-month month day-of-week),"
        " 6 with seconds first",
    ),
    (
        '{id: s, type: schedule, cron: "@daily", timezone: Europe/Pariss}',
        "timezone:",
        "triggers[0] (s).timezone",
        "unknown time zone 'Europe/Pariss' (did you mean 'Europe/Paris'?); use an IANA name",
    ),
    (
        '{id: s, type: schedule, cron: "@daily", recover_missed: some}',
        "recover_missed:",
        "triggers[0] (s).recover_missed",
        "expected one of 'all', 'last', 'none', got 'some'",
    ),
    (
        '{id: s, type: schedule, cron: "@daily", stop_after: [SUCESS]}',
        "SUCESS",
        "triggers[0] (s).stop_after[0]",
        "unknown state 'SUCESS' (did you mean 'SUCCESS'?);"
        " use SUCCESS, FAILED, KILLED, WARNING, CANCELLED",
    ),
    (
        '{id: s, type: schedule, cron: "@daily", stop_after: [RUNNING]}',
        "RUNNING",
        "triggers[0] (s).stop_after[0]",
        "'RUNNING' is not a state an execution ends in",
    ),
    (
        '{id: s, type: schedule, cron: "@daily", stop_after: [FAILED, failed]}',
        "stop_after:",
        "triggers[0] (s).stop_after",
        "FAILED is listed more than once",
    ),
    (
        '{id: s, type: schedule, cron: "@daily", every: 5m}',
        "every:",
        "triggers[0] (s).every",
        "unknown field 'every'; known fields: id, description, inputs, disabled, stop_after,"
        " type, cron, timezone, recover_missed",
    ),
    (
        '{id: s, type: schedule, cron: "@daily", timzone: UTC}',
        "timzone:",
        "triggers[0] (s).timzone",
        "unknown field 'timzone' (did you mean 'timezone'?)",
    ),
    ("{id: s, type: schedule}", None, "triggers[0] (s).cron", "required field 'cron' is missing"),
    (
        "{id: s, type: cronjob}",
        "type:",
        "triggers[0] (s).type",
        "unknown type 'cronjob'; use one of 'schedule', 'webhook', 'flow'",
    ),
    (
        "{id: s, type: Schedule}",
        "type:",
        "triggers[0] (s).type",
        "unknown type 'Schedule' (did you mean 'schedule'?)",
    ),
    (
        "{id: s}",
        None,
        "triggers[0] (s)",
        "required field 'type' is missing: one of 'schedule', 'webhook', 'flow'",
    ),
    ("nightly", None, "triggers[0]", "expected a mapping of fields, got 'nightly'"),
    (
        "{id: 'bad id', type: webhook, key: abcdefghijklmnopq}",
        "id:",
        "triggers[0] (bad id).id",
        "'bad id' is not a valid id",
    ),
    (
        "{id: w, type: webhook, key: secret}",
        "key:",
        "triggers[0] (w).key",
        "a webhook key is the only secret guarding its URL: use at least 16 characters (got 6)",
    ),
    (
        "{id: w, type: webhook, key: 'a key with spaces in it'}",
        "key:",
        "triggers[0] (w).key",
        "a webhook key goes into the URL as it is",
    ),
    ("{id: w, type: webhook}", None, "triggers[0] (w).key", "required field 'key' is missing"),
    (
        "{id: u, type: flow, upstream: {namespace: n}}",
        "upstream:",
        "triggers[0] (u).upstream.flow_id",
        "required field 'flow_id' is missing",
    ),
    (
        "{id: u, type: flow, upstream: {namespace: n, flow_id: g, states: []}}",
        "states:",
        "triggers[0] (u).upstream.states",
        "needs at least 1 item, got 0",
    ),
]


@pytest.mark.parametrize(("trigger", "marker", "field", "message"), _BAD_TRIGGERS)
def test_a_bad_trigger_is_reported_where_it_is(
    trigger: str, marker: str | None, field: str, message: str
) -> None:
    """Each problem is on line 4, at the column where `marker` starts (else the item's)."""
    problem = only(f"id: f\nnamespace: n\ntriggers:\n  - {trigger}\n{TASKS}")
    column = 5 + (trigger.index(marker) if marker else 0)
    assert where(problem) == (4, column, field)
    assert message in problem.message, problem.message
    assert "\n" not in problem.message


def test_every_bad_trigger_is_reported_in_one_pass() -> None:
    found = problems(
        f"""\
        id: f
        triggers:
          - id: nightly
            type: schedule
            cron: "0 25 * * *"
            timezone: Mars/Olympus
          - id: ci
            type: webhook
            key: short
          - {{id: x, type: nope}}
        {TASKS}"""
    )
    assert [where(p) for p in found] == [
        (5, 5, "triggers[0] (nightly).cron"),
        (6, 5, "triggers[0] (nightly).timezone"),
        (9, 5, "triggers[1] (ci).key"),
        (10, 13, "triggers[2] (x).type"),
    ]


def test_a_multi_line_trigger_points_at_the_field() -> None:
    problem = only(
        f"""\
        id: f
        triggers:
          - id: nightly
            type: schedule
            cron: "0 2 * * *"
            timezone: UTC
            recover_missed: sometimes
        {TASKS}"""
    )
    assert where(problem) == (7, 5, "triggers[0] (nightly).recover_missed")


# --- checks that need the whole flow ----------------------------------------------------------


def test_trigger_ids_are_unique_within_a_flow() -> None:
    problem = only(
        f"""\
        id: f
        triggers:
          - {{id: nightly, type: schedule, cron: "@daily"}}
          - {{id: other, type: schedule, cron: "@hourly"}}
          - {{id: nightly, type: schedule, cron: "@weekly"}}
        {TASKS}"""
    )
    assert where(problem) == (5, 6, "triggers[2] (nightly).id")
    assert problem.message == "duplicate trigger id 'nightly' (first used by triggers[0])"


def test_trigger_inputs_must_be_inputs_of_the_flow() -> None:
    problem = only(
        f"""\
        id: f
        inputs: [{{id: month, type: string, default: "01"}}]
        triggers:
          - id: nightly
            type: schedule
            cron: "@daily"
            inputs:
              monht: "02"
        {TASKS}"""
    )
    assert where(problem) == (8, 7, "triggers[0] (nightly).inputs.monht")
    assert problem.message == "unknown input 'monht' (did you mean 'month'?)"
    problem = only(
        f"""\
        id: f
        triggers: [{{id: s, type: schedule, cron: "@daily", inputs: {{month: "02"}}}}]
        {TASKS}"""
    )
    assert problem.message == "unknown input 'month'; the flow declares no inputs"


def test_a_required_input_must_come_from_each_trigger() -> None:
    text = f"""\
        id: f
        inputs:
          - {{id: month, type: string}}
          - {{id: rows, type: int, default: 10}}
        triggers:
          - {{id: given, type: schedule, cron: "@daily", inputs: {{month: "01"}}}}
          - {{id: forgotten, type: schedule, cron: "@daily"}}
          - {{id: off, type: schedule, cron: "@daily", disabled: true}}
        {TASKS}"""
    problem = only(text)
    assert where(problem) == (7, 5, "triggers[1] (forgotten)")
    assert problem.message == (
        "the flow's required input 'month' must be given in this trigger's `inputs`"
    )


def test_a_flow_trigger_cannot_wait_for_its_own_flow() -> None:
    problem = only(
        f"""\
        id: load
        namespace: zoomcamp
        triggers:
          - {{id: again, type: flow, upstream: {{namespace: zoomcamp, flow_id: load}}}}
        {TASKS}"""
    )
    assert where(problem) == (4, 29, "triggers[0] (again).upstream")
    assert "cannot wait for its own flow" in problem.message


def test_trigger_problems_come_with_the_rest_of_the_file() -> None:
    found = problems(
        """\
        id: f
        triggers:
          - {id: s, type: schedule, cron: "@daily"}
          - {id: s, type: schedule, cron: "@hourly"}
        tasks:
          - {id: a, image: x, command: [true], depends_on: [b]}
        """
    )
    assert [p.field for p in found] == ["triggers[1] (s).id", "tasks[0] (a).depends_on[0]"]
