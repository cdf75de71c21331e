"""The JSON the HTTP API takes and gives, as pydantic models: FastAPI checks requests
against them and writes /openapi.json from them, so the web UI and scripts read one
documented shape. Times are ISO 8601 strings in UTC; states are their names.

The execution document is the one `runner show --json` prints (`ExecutionRecord.to_dict`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class _Out(BaseModel):
    model_config = ConfigDict(frozen=True)


class _In(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


# -- errors and health ---------------------------------------------------------------------


class ErrorBody(_Out):
    """Every error answer: what went wrong, and the details (each problem of a flow file,
    each invalid field of a request)."""

    error: str
    details: list[Any] = Field(default_factory=list)


class Health(_Out):
    """`ok`, or what is wrong with the database or the engine (then the status is 503)."""

    status: Literal["ok", "unavailable", "stopping"]
    database: str
    engine: str


# -- flows ---------------------------------------------------------------------------------------


class ProblemOut(_Out):
    """One problem of a flow file; `text` is the line `runner validate` prints."""

    file: str
    line: int | None
    column: int | None
    field: str
    message: str
    text: str


class InvalidFileOut(_Out):
    file: str
    problems: list[ProblemOut]


class InputOut(_Out):
    """A flow input, as a form needs it."""

    id: str
    type: str
    description: str | None
    required: bool
    default: Any
    values: list[str] | None
    item_type: str | None


class TriggerOut(_Out):
    """A trigger of a flow with what it will do next."""

    id: str
    type: Literal["schedule", "webhook", "flow"]
    description: str | None
    disabled: bool
    disabled_reason: str | None = None
    cron: str | None = None
    timezone: str | None = None
    recover_missed: str | None = None
    next: list[datetime] = Field(
        default_factory=list, description="The next scheduled times (schedules only)."
    )
    upstream: dict[str, Any] | None = None
    last_execution_id: str | None = None


class TaskOut(_Out):
    """A task of the flow's graph (the UI draws the DAG from these)."""

    id: str
    type: str
    description: str | None
    image: str | None
    depends_on: list[str]
    matrix: dict[str, list[Any]] | None
    group: Literal["tasks", "errors", "finally"]
    inputs: list[InputOut] = Field(
        default_factory=list, description="A pause task's inputs: what a resume may give."
    )


class LastExecution(_Out):
    id: str
    state: str
    created_at: datetime


class FlowSummary(_Out):
    namespace: str
    id: str
    description: str | None
    labels: dict[str, str]
    file: str
    revision: str
    paused: bool
    paused_at: datetime | None
    tasks: int
    triggers: list[TriggerOut]
    last_execution: LastExecution | None = None


class FlowDetail(FlowSummary):
    source: str
    inputs: list[InputOut]
    graph: list[TaskOut]


class ExecutionFlow(_Out):
    """The flow as an execution ran it (its revision): a run page draws the DAG and
    knows the input types (which are secrets) from it, even after the file changed."""

    namespace: str
    id: str
    revision: str
    source: str
    inputs: list[InputOut]
    graph: list[TaskOut]


class FlowList(_Out):
    flows: list[FlowSummary]
    invalid: list[InvalidFileOut] = Field(
        description="Files of the flows folder that cannot be used, with their problems."
    )


class Validated(_Out):
    valid: Literal[True] = True
    namespace: str
    id: str
    tasks: int


# -- executions ----------------------------------------------------------------------------------


class TaskRunOut(_Out):
    id: int
    execution_id: str
    task_id: str
    attempt: int
    state: str
    exit_code: int | None
    image: str | None
    container_id: str | None
    error: str | None
    outputs: dict[str, Any] | None
    created_at: datetime
    started_at: datetime | None
    ended_at: datetime | None
    duration_s: float | None


class ExecutionOut(_Out):
    """An execution with its task runs: the document of `runner show --json`."""

    id: str
    flow_id: str
    namespace: str
    revision: str
    inputs: dict[str, Any]
    labels: dict[str, Any]
    state: str
    error: str | None
    created_at: datetime
    started_at: datetime | None
    ended_at: datetime | None
    duration_s: float | None
    trigger: dict[str, Any] | None = Field(
        description="What started it, if a trigger did: id, type, date, body, headers, upstream."
    )
    task_runs: list[TaskRunOut]


class ExecutionSummary(_Out):
    """An execution in a list: its task runs counted by state, not listed."""

    id: str
    flow_id: str
    namespace: str
    revision: str
    inputs: dict[str, Any]
    labels: dict[str, Any]
    state: str
    error: str | None
    created_at: datetime
    started_at: datetime | None
    ended_at: datetime | None
    duration_s: float | None
    trigger: dict[str, Any] | None
    task_states: dict[str, int] = Field(
        description="How many task runs (latest attempt of each) are in each state."
    )


class ExecutionPageOut(_Out):
    executions: list[ExecutionSummary]
    next: str | None = Field(
        description="Pass as `after` to get the next page; null on the last page."
    )


class NewExecution(_In):
    """A run of a flow: its inputs (as `runner run -i` takes them, or typed JSON values),
    and labels added to the flow's own."""

    inputs: dict[str, Any] = Field(default_factory=dict)
    labels: dict[str, str] = Field(default_factory=dict)


class Restart(_In):
    from_task: str | None = Field(default=None, alias="from")


class Resume(_In):
    """Values for the inputs the paused task declares (they become its outputs); `task`
    when several tasks of the execution are paused."""

    inputs: dict[str, Any] = Field(default_factory=dict)
    task: str | None = None


class ExecutionRef(_Out):
    """The answer to a request that started (or changed) an execution."""

    id: str
    state: str
    url: str


# -- logs and artifacts --------------------------------------------------------------------------


class LogLineOut(_Out):
    id: int = Field(description="Grows with every line stored: the cursor (`after`).")
    task_run_id: int
    task_id: str
    stream: Literal["stdout", "stderr"]
    time: datetime
    line: str


class LogPage(_Out):
    lines: list[LogLineOut]
    next: int | None = Field(
        description="The id of the last line: pass it as `after` for the lines that follow."
    )


class ArtifactOut(_Out):
    id: int
    task_run_id: int
    task_id: str
    path: str
    size: int
    sha256: str
    created_at: datetime
    url: str


class ArtifactList(_Out):
    artifacts: list[ArtifactOut]


# -- backfills ----------------------------------------------------------------------------------


class BackfillIn(_In):
    namespace: str
    flow_id: str
    trigger: str | None = Field(
        default=None, description="The schedule trigger; needed if the flow has several."
    )
    start: datetime = Field(
        description="The first time (inclusive); without a zone, the trigger's."
    )
    end: datetime = Field(description="The last time (exclusive); without a zone, the trigger's.")
    dry_run: bool = False


class BackfillTime(_Out):
    scheduled_at: datetime
    execution_id: str | None = Field(
        description="The execution started for this time, or the one that ran it before."
    )
    already_run: bool


class BackfillOut(_Out):
    namespace: str
    flow_id: str
    trigger: str
    dry_run: bool
    times: list[BackfillTime]
