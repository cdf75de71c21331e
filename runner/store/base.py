"""The store's contract: every read and write the engine (scheduler, recovery, leases, api)
makes, as a Protocol. `runner.store.sql.SqlStore` keeps it in SQLite or PostgreSQL;
`runner.store.testing.InMemoryStore` in a dict, for unit tests. Both pass the same tests
(tests/unit/test_store.py).

Rules every implementation keeps:
- Each call is one short transaction, safe to call from any thread.
- Writes are idempotent when tried again (updates set the same values; inserts look for
  the row by its natural key first), so a write may be retried after an outage.
- An id that matches nothing is a `NotFoundError` where the method says so; a task run of
  an unknown execution, or an artifact of an unknown task run, is a `StoreError`.
- Times come back timezone-aware in UTC. Lists come back in a defined order (each method
  says which); task runs of an execution always in creation order.
- Text from containers is stored with NUL shown as '␀' (`records.clean_text`); a JSON value
  holding a number that is not finite is refused with a StoreError (`records.clean_json`).
- Leases are decided by the store's clock (the database's `now()`), never the caller's:
  `heartbeat`, `create_execution`, `take_lease` and `reopen_execution` stamp the lease
  with it, and `active_leases` and `try_start` compare with it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol

from runner.execution import ExecutionState, TaskState
from runner.store.records import (
    ArtifactFile,
    ArtifactRecord,
    Beat,
    ExecutionFilter,
    ExecutionRecord,
    FlowState,
    Lease,
    LeaseOwner,
    LogRecord,
    NewLogBatch,
    NewLogLine,
    Page,
    SchemaRevision,
    TriggerFire,
)
from runner.tokens import ApiToken


class Store(Protocol):
    """Where runner records what it does. Open one with `runner.store.open_store(url)`
    (or build an `InMemoryStore`); close it when done."""

    # -- the store itself -----------------------------------------------------------

    @property
    def url(self) -> str:
        """Where the data is, with any password hidden."""
        ...

    @property
    def description(self) -> str:
        """The database as messages name it: `postgresql database 'runner' at host:5432`."""
        ...

    def close(self) -> None:
        """Let go of connections; do not use the store afterwards."""
        ...

    def __enter__(self) -> Store: ...

    def __exit__(self, *exc_info: object) -> None: ...

    def schema_revision(self) -> SchemaRevision:
        """The schema's migration revision and the newest one this runner ships."""
        ...

    def upgrade_schema(self) -> SchemaRevision:
        """Bring the schema to the newest revision (safe while others use it)."""
        ...

    # -- executions -----------------------------------------------------------------

    def create_execution(
        self,
        *,
        execution_id: str,
        flow_id: str,
        namespace: str,
        revision: str,
        source: str,
        inputs: Mapping[str, Any],
        labels: Mapping[str, Any],
        owner: LeaseOwner | None = None,
        flow_path: str | None = None,
        trigger: Mapping[str, Any] | None = None,
        fire: TriggerFire | None = None,
    ) -> None:
        """Record a new execution in state CREATED (`execution_id`: a uuid4 hex). With
        `owner`, its lease starts now by the store's clock. Creating the same id again is
        a no-op when retried after a lost reply, a StoreError otherwise.

        `trigger` is what started it (kept as JSON). With `fire`, the firing is recorded in
        the same transaction under its key, unique per (namespace, flow, trigger): if the
        key was recorded already (by this or any process) nothing is recorded and
        `AlreadyFiredError` names the execution that has it."""
        ...

    def set_execution_state(
        self, execution_id: str, state: ExecutionState, *, error: str | None = None
    ) -> None:
        """Move an execution to `state` with `error` (None clears it). The first move to
        RUNNING sets `started_at`; a final state sets `ended_at`, a state that is not
        final clears it. Idempotent. NotFoundError for an unknown id."""
        ...

    def get_execution(self, execution_id_or_prefix: str) -> ExecutionRecord:
        """The execution with this id, or the only one whose id starts with it (a prefix
        of at least `MIN_PREFIX` characters, matched literally), with its task runs.
        NotFoundError when nothing matches, or when a prefix matches several (naming up
        to 10 of them, newest first)."""
        ...

    def get_execution_source(self, execution_id: str) -> str:
        """The flow file's text when the execution was created. NotFoundError if unknown."""
        ...

    def execution_flow_path(self, execution_id: str) -> str | None:
        """Where the flow file was (for restarts); None if not recorded or unknown."""
        ...

    def list_executions(
        self,
        where: ExecutionFilter | None = None,
        *,
        after: str | None = None,
        limit: int = 20,
    ) -> Page[ExecutionRecord]:
        """The executions `where` matches, newest first by (created_at, id), each with its
        task runs; at most `limit` (1 to MAX_PAGE, else UsageError). `after` is the
        `next_cursor` of the previous page (keyset pagination: executions created meanwhile
        do not shift the pages); a cursor that is not one is a UsageError."""
        ...

    def execution_states(self, execution_ids: Sequence[str]) -> dict[str, ExecutionState]:
        """The state of each of these executions the store knows (unknown ids left out)."""
        ...

    # -- leases, kill requests and flow concurrency ------------------------------------

    def heartbeat(self, execution_id: str, token: str) -> Beat:
        """Renew the lease held with `token` (its time: the store's now). KILL if a kill
        was requested, LOST if another owner holds it (or the execution is unknown)."""
        ...

    def request_kill(self, execution_id: str) -> ExecutionState:
        """Ask whoever runs the execution to kill it (marks it once; no-op when final);
        return its state at that moment. NotFoundError for an unknown id."""
        ...

    def active_leases(self, execution_id: str | None = None, *, lease_s: float) -> list[Lease]:
        """Every execution not in a final state (or only `execution_id`'s), oldest first,
        with its lease; `Lease.expired` says whether, by the store's clock, it went without
        a heartbeat for more than `lease_s` seconds (or never had one)."""
        ...

    def take_lease(self, lease: Lease, owner: LeaseOwner) -> bool:
        """Take over `lease` for `owner` (stamped with the store's now), unless its token
        or heartbeat changed since it was read: a compare-and-set, so of two takers one
        wins. True if `owner` holds it now."""
        ...

    def reopen_execution(self, execution_id: str, owner: LeaseOwner) -> None:
        """Make a FAILED or KILLED execution runnable again: CREATED, no error, no end, no
        pending kill, leased by `owner`. UsageError for any other state; NotFoundError
        for an unknown id."""
        ...

    def try_start(
        self, execution_id: str, *, namespace: str, flow_id: str, limit: int, lease_s: float
    ) -> list[str]:
        """Move the execution to RUNNING if its flow has fewer than `limit` executions
        running and none QUEUED ahead of it (created before it), atomically across
        processes; return [] then. Else return the ids of the running ones, oldest first
        (or ["(queued ahead)"]), and change nothing. Executions whose lease expired
        (store's clock, `lease_s`) do not count."""
        ...

    # -- task runs ------------------------------------------------------------------

    def create_task_run(
        self, *, execution_id: str, task_id: str, attempt: int, image: str | None
    ) -> int:
        """Record attempt `attempt` of a task in state CREATED; return its id (ids grow).
        StoreError if the execution is unknown."""
        ...

    def task_run_started(
        self, task_run_id: int, *, container_id: str | None, started_at: datetime
    ) -> None:
        """Mark a task run RUNNING in `container_id`. NotFoundError for an unknown id."""
        ...

    def finish_task_run(
        self,
        task_run_id: int,
        *,
        state: TaskState,
        exit_code: int | None = None,
        error: str | None = None,
        ended_at: datetime | None = None,
        outputs: Mapping[str, Any] | None = None,
        node: str | None = None,
    ) -> None:
        """Record how a task run ended (`ended_at` defaults to now) and, for a backend of
        several machines, the `node` it ran on (left as it was when None). Outputs with a
        number that is not finite are a StoreError. NotFoundError for an unknown id."""
        ...

    def record_skipped(
        self, *, execution_id: str, task_id: str, reason: str, attempt: int = 1
    ) -> int:
        """Record a task that will not run (SKIPPED, `reason` as its error); its id."""
        ...

    def count_task_run_logs(self, task_run_id: int) -> int:
        """How many lines of this task run are stored (where a recovery resumes)."""
        ...

    # -- logs -----------------------------------------------------------------------

    def append_logs(self, lines: Sequence[NewLogLine]) -> None:
        """Store lines in one transaction, in their order (ids grow in that order), NUL
        shown as '␀'. All or nothing: a line that cannot be stored (unknown task run,
        bad data) fails the whole batch with a StoreError; a connection-level failure is a
        TransientStoreError (the caller may retry; see LogWriter)."""
        ...

    def append_log_batches(self, batches: Sequence[NewLogBatch]) -> None:
        """`append_logs` of the lines of `batches`, in their order: each line stored with
        its batch's execution, task run, task, stream and time."""
        ...

    def get_logs(
        self,
        execution_id: str,
        *,
        task_id: str | None = None,
        after: int | None = None,
        limit: int | None = None,
        tail: int | None = None,
    ) -> list[LogRecord]:
        """An execution's lines (or one task's), in the order stored: those with an id
        greater than `after` (the last id the caller has), at most `limit` of them, or
        only the last `tail` of them (without reading the others; a UsageError with a
        `limit`). Unknown execution: []."""
        ...

    def count_logs(self, execution_id: str) -> int:
        """How many lines an execution has."""
        ...

    # -- artifacts ------------------------------------------------------------------

    def record_artifacts(
        self,
        *,
        execution_id: str,
        task_run_id: int,
        task_id: str,
        artifacts: Sequence[ArtifactFile],
    ) -> None:
        """Record the files a task run copied out, replacing what was recorded for that
        task run before (so a retry stores each once), in path order. StoreError for an
        unknown task run."""
        ...

    def list_artifacts(
        self, execution_id: str, *, task_id: str | None = None
    ) -> list[ArtifactRecord]:
        """An execution's artifacts (or one task's), in the order recorded (task run by
        task run, each in path order)."""
        ...

    def get_artifact(self, artifact_id: int) -> ArtifactRecord:
        """One artifact by its id. NotFoundError if there is none."""
        ...

    # -- the server: health, tokens, flows, triggers, pauses --------------------------

    def ping(self) -> None:
        """Raise a StoreError unless the store answers now (a health check)."""
        ...

    def add_token(self, token: ApiToken) -> None:
        """Keep an API token (its digest, never the token). ConflictError if a token has
        that name."""
        ...

    def find_token(self, digest: str) -> ApiToken | None:
        """The token whose SHA-256 digest is `digest`, or None."""
        ...

    def list_tokens(self) -> list[ApiToken]:
        """Every token, by name."""
        ...

    def remove_token(self, name: str) -> bool:
        """Delete the token `name`; whether there was one."""
        ...

    def record_flow_revision(
        self,
        *,
        namespace: str,
        flow_id: str,
        revision: str,
        source: str,
        path: str,
        at: datetime,
    ) -> bool:
        """Keep a revision of a flow file (its text, where it was, when first loaded);
        False if that revision was kept already (the first one stays)."""
        ...

    def flow_states(
        self, *, namespace: str | None = None, flow_id: str | None = None
    ) -> dict[tuple[str, str], FlowState]:
        """By (namespace, flow id): whether each flow is paused and where its triggers
        stand; only flows that are paused or have a trigger state, filtered if asked."""
        ...

    def set_flow_paused(self, namespace: str, flow_id: str, *, paused: bool, at: datetime) -> None:
        """Pause a flow (from `at`; pausing a paused flow keeps its first time) or unpause
        it; unpausing also lifts what `stop_after` disabled of its triggers."""
        ...

    def init_trigger(self, namespace: str, flow_id: str, trigger_id: str, *, at: datetime) -> None:
        """Record a trigger first seen at `at` (its `created_at` and `last_at`); no-op if
        it has a state already."""
        ...

    def advance_trigger(
        self,
        namespace: str,
        flow_id: str,
        trigger_id: str,
        *,
        last_at: datetime | None = None,
        execution_id: str | None = None,
        fired_at: datetime | None = None,
    ) -> None:
        """Move a trigger's state forward (never back: two servers may both write it):
        `last_at` if later than the one kept; `execution_id` with `fired_at` if that is
        not earlier than the one kept. A trigger without a state gets one."""
        ...

    def disable_trigger(
        self, namespace: str, flow_id: str, trigger_id: str, *, reason: str, at: datetime
    ) -> None:
        """Disable a trigger (its `stop_after` matched), saying why."""
        ...

    def fired_times(
        self, namespace: str, flow_id: str, trigger_id: str, *, start: datetime, end: datetime
    ) -> dict[datetime, str]:
        """The scheduled times of the trigger fired in [start, end) (UTC), each with the
        execution that ran it."""
        ...

    def ended_executions(
        self, namespace: str, flow_id: str, *, since: datetime, limit: int = 1000
    ) -> list[ExecutionRecord]:
        """The flow's executions that ended at or after `since`, in the order they ended
        (then by id), each with its task runs; at most `limit`."""
        ...

    def pause_task_run(self, task_run_id: int, *, started_at: datetime) -> None:
        """Mark a task run PAUSED (a pause task waiting). NotFoundError for an unknown id."""
        ...

    def take_paused(self, execution_id: str, owner: LeaseOwner) -> bool:
        """Take a PAUSED execution to run it on (resume) or end it (kill): CREATED, no
        error, no pending kill, leased by `owner`, atomically across processes. False if
        it is not PAUSED (any more): someone else took it."""
        ...

    def heartbeat_many(self, token: str, execution_ids: Sequence[str]) -> dict[str, Beat]:
        """Renew, in one statement, the leases of these executions held with `token` (one
        process's worker holds them all with one token): by id, KEPT, KILL (a kill was
        requested) or LOST (another owner holds it, or it is unknown)."""
        ...
