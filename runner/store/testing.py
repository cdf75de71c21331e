"""For tests: `InMemoryStore`, the whole `Store` contract in a dict, and helpers giving a
test a throwaway PostgreSQL database.

`InMemoryStore` keeps what `SqlStore` keeps, with the same ordering, the same errors and
the same records (tests/unit/test_store.py runs the contract against both), so the
scheduler, recovery and leases can be unit-tested without a database file. Its clock is
the "database's clock" of the lease rules; a test may pass its own to move time, and may
make it unreachable (`outage()`) to see how the engine lives through a database outage.

Importing this module loads no database library; the Postgres helpers import SQLAlchemy
when called.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from runner.errors import AlreadyFiredError, ConflictError, NotFoundError, StoreError, UsageError
from runner.execution import ExecutionState, TaskState
from runner.store.records import (
    MIN_PREFIX,
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
    TaskRunRecord,
    TransientStoreError,
    TriggerFire,
    TriggerState,
    ambiguous_prefix,
    check_limit,
    check_log_limit,
    check_row_id,
    clean_json,
    clean_text,
    decode_cursor,
    encode_cursor,
    no_match,
    not_restartable,
)
from runner.tokens import ApiToken

if TYPE_CHECKING:
    from sqlalchemy import Engine

__all__ = [
    "POSTGRES_URL_ENV",
    "InMemoryStore",
    "postgres_problem",
    "temporary_postgres_database",
]

_ACTIVE = (ExecutionState.CREATED, ExecutionState.QUEUED, ExecutionState.RUNNING)


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _json(value: Any, what: str) -> str:
    """A JSON value as the SQL store keeps it: cleaned, then text (read back as new
    objects, like a database gives)."""
    try:
        return json.dumps(clean_json(value, what), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise StoreError(f"cannot store {what}: {exc}") from exc


@dataclass
class _Execution:
    id: str
    flow_id: str
    namespace: str
    revision: str
    source: str
    inputs: str  # JSON text
    labels: str  # JSON text
    state: ExecutionState
    created_at: datetime
    flow_path: str | None
    error: str | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None
    owner_host: str | None = None
    owner_pid: int | None = None
    owner_boot_id: str | None = None
    lease_token: str | None = None
    heartbeat_at: datetime | None = None
    kill_requested_at: datetime | None = None
    trigger: str | None = None  # JSON text


class InMemoryStore:
    """The `Store` contract in memory: thread-safe, one lock around every call.

    `clock` gives the store's now (default: the real time, UTC); leases are stamped and
    judged by it, as SqlStore does by the database's clock.
    """

    def __init__(self, *, clock: Callable[[], datetime] | None = None) -> None:
        self._clock = clock or (lambda: datetime.now(UTC))
        self._lock = threading.RLock()
        self._executions: dict[str, _Execution] = {}
        self._task_runs: dict[int, TaskRunRecord] = {}
        self._logs: dict[str, list[LogRecord]] = {}  # by execution, in id order
        self._logs_of_run: dict[int, int] = {}
        self._artifacts: dict[int, ArtifactRecord] = {}
        self._tokens: dict[str, ApiToken] = {}
        self._revisions: dict[tuple[str, str, str], datetime] = {}
        self._pauses: dict[tuple[str, str], datetime] = {}
        self._triggers: dict[tuple[str, str, str], TriggerState] = {}
        # (namespace, flow, trigger, key) -> (scheduled_at, execution id)
        self._fires: dict[tuple[str, str, str, str], tuple[datetime | None, str]] = {}
        self._next_id = {"task_run": 1, "log": 1, "artifact": 1}
        self._unreachable = False
        self.closed = False

    # -- the store itself -----------------------------------------------------------

    @property
    def url(self) -> str:
        return "memory://"

    @property
    def description(self) -> str:
        return "in-memory store"

    def __repr__(self) -> str:
        return "InMemoryStore()"

    def close(self) -> None:
        self.closed = True

    def __enter__(self) -> InMemoryStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def schema_revision(self) -> SchemaRevision:
        return SchemaRevision(current="memory", head="memory", known=True)

    def upgrade_schema(self) -> SchemaRevision:
        return self.schema_revision()

    @contextmanager
    def outage(self) -> Iterator[None]:
        """Every call in the block fails as a database that cannot be reached does
        (TransientStoreError), as if its server were down."""
        self._unreachable = True
        try:
            yield
        finally:
            self._unreachable = False

    @contextmanager
    def _call(self, action: str) -> Iterator[None]:
        with self._lock:
            if self._unreachable:
                raise TransientStoreError(
                    f"cannot {action} in {self.description}: it cannot be reached (an outage)"
                )
            yield

    def _new_id(self, kind: str) -> int:
        found = self._next_id[kind]
        self._next_id[kind] = found + 1
        return found

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
        action = f"record execution '{execution_id}'"
        inputs_json = _json(dict(inputs), f"the inputs of execution '{execution_id}'")
        labels_json = _json(dict(labels), f"the labels of execution '{execution_id}'")
        trigger_json = (
            None
            if trigger is None
            else _json(dict(trigger), f"the trigger of execution '{execution_id}'")
        )
        with self._call(action):
            if execution_id in self._executions:
                raise StoreError(
                    f"cannot {action} in {self.description}: an execution has that id already"
                )
            if fire is not None:
                key = (namespace, flow_id, fire.trigger_id, fire.key)
                taken = self._fires.get(key)
                if taken is not None:
                    raise AlreadyFiredError(
                        f"trigger {fire.trigger_id!r} of flow {namespace}.{flow_id} already"
                        f" fired for {fire.key} (execution {taken[1]})",
                        execution_id=taken[1],
                    )
                scheduled = None if fire.scheduled_at is None else _utc(fire.scheduled_at)
                self._fires[key] = (scheduled, execution_id)
            row = _Execution(
                id=execution_id,
                flow_id=flow_id,
                namespace=namespace,
                revision=revision,
                source=source,
                inputs=inputs_json,
                labels=labels_json,
                state=ExecutionState.CREATED,
                created_at=self._clock(),
                flow_path=flow_path,
                trigger=trigger_json,
            )
            if owner is not None:
                self._lease_to(row, owner)
            self._executions[execution_id] = row

    def _lease_to(self, row: _Execution, owner: LeaseOwner) -> None:
        row.owner_host, row.owner_pid = owner.host, owner.pid
        row.owner_boot_id, row.lease_token = owner.boot_id, owner.token
        row.heartbeat_at = self._clock()

    def _execution(self, execution_id: str) -> _Execution:
        found = self._executions.get(execution_id)
        if found is None:
            raise NotFoundError(f"no execution matches '{execution_id}'")
        return found

    def set_execution_state(
        self, execution_id: str, state: ExecutionState, *, error: str | None = None
    ) -> None:
        with self._call(f"set the state of execution '{execution_id}'"):
            row = self._execution(execution_id)
            now = self._clock()
            row.state = ExecutionState(state)
            row.error = None if error is None else clean_text(error)
            row.ended_at = now if row.state.is_final else None
            if row.state is ExecutionState.RUNNING and row.started_at is None:
                row.started_at = now

    def get_execution(self, execution_id_or_prefix: str) -> ExecutionRecord:
        wanted = execution_id_or_prefix.strip()
        with self._call(f"read execution '{wanted}'"):
            row = self._executions.get(wanted)
            if row is None and len(wanted) >= MIN_PREFIX:
                found = self._newest_first(
                    r for r in self._executions.values() if r.id.startswith(wanted)
                )
                if len(found) > 1:
                    raise NotFoundError(ambiguous_prefix(wanted, [r.id for r in found[:11]]))
                row = found[0] if found else None
            if row is None:
                raise NotFoundError(no_match(wanted))
            return self._record(row)

    @staticmethod
    def _newest_first(rows: Any) -> list[_Execution]:
        return sorted(rows, key=lambda r: (r.created_at, r.id), reverse=True)

    def _record(self, row: _Execution) -> ExecutionRecord:
        runs = tuple(run for run in self._task_runs.values() if run.execution_id == row.id)
        return ExecutionRecord(
            id=row.id,
            flow_id=row.flow_id,
            namespace=row.namespace,
            revision=row.revision,
            inputs=json.loads(row.inputs),
            labels=json.loads(row.labels),
            state=row.state,
            error=row.error,
            created_at=row.created_at,
            started_at=row.started_at,
            ended_at=row.ended_at,
            task_runs=tuple(_fresh_run(run) for run in runs),
            trigger=None if row.trigger is None else json.loads(row.trigger),
        )

    def get_execution_source(self, execution_id: str) -> str:
        with self._call(f"read execution '{execution_id}'"):
            return self._execution(execution_id).source

    def execution_flow_path(self, execution_id: str) -> str | None:
        with self._call(f"read execution '{execution_id}'"):
            row = self._executions.get(execution_id)
            return None if row is None else row.flow_path

    def list_executions(
        self,
        where: ExecutionFilter | None = None,
        *,
        after: str | None = None,
        limit: int = 20,
    ) -> Page[ExecutionRecord]:
        check_limit(limit)
        where = where or ExecutionFilter()
        where.state_names()  # an unknown state is refused even with no executions
        cursor = None if after is None else decode_cursor(after)
        with self._call("list executions"):
            records = [
                record
                for record in (
                    self._record(r) for r in self._newest_first(self._executions.values())
                )
                if where.matches(record)
                and (cursor is None or (record.created_at, record.id) < cursor)
            ]
        page, more = records[:limit], len(records) > limit
        last = page[-1] if more else None
        return Page(tuple(page), None if last is None else encode_cursor(last.created_at, last.id))

    def execution_states(self, execution_ids: Sequence[str]) -> dict[str, ExecutionState]:
        with self._call("read execution states"):
            return {
                execution_id: self._executions[execution_id].state
                for execution_id in execution_ids
                if execution_id in self._executions
            }

    # -- leases, kill requests and flow concurrency ------------------------------------

    def heartbeat(self, execution_id: str, token: str) -> Beat:
        with self._call(f"renew the lease of execution '{execution_id}'"):
            row = self._executions.get(execution_id)
            if row is None or row.lease_token != token:
                return Beat.LOST
            row.heartbeat_at = self._clock()
            return Beat.KILL if row.kill_requested_at is not None else Beat.KEPT

    def request_kill(self, execution_id: str) -> ExecutionState:
        with self._call(f"ask execution '{execution_id}' to stop"):
            row = self._execution(execution_id)
            if row.state in _ACTIVE and row.kill_requested_at is None:
                row.kill_requested_at = self._clock()
            return row.state

    def active_leases(self, execution_id: str | None = None, *, lease_s: float) -> list[Lease]:
        with self._call("look for running executions"):
            cutoff = self._clock() - timedelta(seconds=lease_s)
            rows = sorted(
                (
                    r
                    for r in self._executions.values()
                    if r.state in _ACTIVE and execution_id in (None, r.id)
                ),
                key=lambda r: (r.created_at, r.id),
            )
            return [
                Lease(
                    execution_id=r.id,
                    state=r.state.value,
                    owner_host=r.owner_host,
                    owner_pid=r.owner_pid,
                    token=r.lease_token,
                    heartbeat_at=r.heartbeat_at,
                    kill_requested=r.kill_requested_at is not None,
                    owner_boot_id=r.owner_boot_id,
                    expired=r.heartbeat_at is None or r.heartbeat_at < cutoff,
                )
                for r in rows
            ]

    def take_lease(self, lease: Lease, owner: LeaseOwner) -> bool:
        with self._call(f"take over execution '{lease.execution_id}'"):
            row = self._executions.get(lease.execution_id)
            if row is None or (row.lease_token, row.heartbeat_at) != (
                lease.token,
                lease.heartbeat_at,
            ):
                return False
            self._lease_to(row, owner)
            return True

    def reopen_execution(self, execution_id: str, owner: LeaseOwner) -> None:
        with self._call(f"reopen execution '{execution_id}'"):
            row = self._execution(execution_id)
            if row.state not in (ExecutionState.FAILED, ExecutionState.KILLED):
                raise UsageError(not_restartable(execution_id, row.state))
            row.state, row.error, row.ended_at, row.kill_requested_at = (
                ExecutionState.CREATED,
                None,
                None,
                None,
            )
            self._lease_to(row, owner)

    def try_start(
        self, execution_id: str, *, namespace: str, flow_id: str, limit: int, lease_s: float
    ) -> list[str]:
        with self._call(f"take a concurrency slot of flow '{namespace}.{flow_id}'"):
            me = self._execution(execution_id)
            fresh = self._clock() - timedelta(seconds=lease_s)
            alive = [
                r
                for r in self._executions.values()
                if (r.namespace, r.flow_id) == (namespace, flow_id)
                and r.id != execution_id
                and r.heartbeat_at is not None
                and r.heartbeat_at >= fresh
            ]
            running = [
                r.id
                for r in sorted(alive, key=lambda r: (r.created_at, r.id))
                if r.state is ExecutionState.RUNNING
            ]
            ahead = sum(
                1
                for r in alive
                if r.state is ExecutionState.QUEUED and r.created_at < me.created_at
            )
            if len(running) + ahead >= limit:
                return running or ["(queued ahead)"]
            me.state = ExecutionState.RUNNING
            me.started_at = me.started_at or self._clock()
            return []

    # -- task runs ------------------------------------------------------------------

    def create_task_run(
        self, *, execution_id: str, task_id: str, attempt: int, image: str | None
    ) -> int:
        return self._insert_task_run(
            f"record attempt {attempt} of task '{task_id}'",
            execution_id=execution_id,
            task_id=task_id,
            attempt=attempt,
            state=TaskState.CREATED,
            image=image,
        )

    def record_skipped(
        self, *, execution_id: str, task_id: str, reason: str, attempt: int = 1
    ) -> int:
        return self._insert_task_run(
            f"record task '{task_id}' as skipped",
            execution_id=execution_id,
            task_id=task_id,
            attempt=attempt,
            state=TaskState.SKIPPED,
            error=clean_text(reason),
            ended=True,
        )

    def _insert_task_run(
        self,
        action: str,
        *,
        execution_id: str,
        task_id: str,
        attempt: int,
        state: TaskState,
        image: str | None = None,
        error: str | None = None,
        ended: bool = False,
    ) -> int:
        with self._call(action):
            if execution_id not in self._executions:
                raise StoreError(
                    f"cannot {action} in {self.description}: no execution has id"
                    f" '{execution_id}' (FOREIGN KEY constraint failed)"
                )
            now = self._clock()
            run_id = self._new_id("task_run")
            self._task_runs[run_id] = TaskRunRecord(
                id=run_id,
                execution_id=execution_id,
                task_id=task_id,
                attempt=attempt,
                state=state,
                exit_code=None,
                image=image,
                container_id=None,
                error=error,
                outputs=None,
                created_at=now,
                started_at=None,
                ended_at=now if ended else None,
            )
            return run_id

    def _update_task_run(self, task_run_id: int, action: str, **values: Any) -> None:
        with self._call(action):
            run = self._task_runs.get(task_run_id)
            if run is None:
                raise NotFoundError(f"no task run has id {task_run_id}")
            self._task_runs[task_run_id] = replace(run, **values)

    def task_run_started(
        self, task_run_id: int, *, container_id: str | None, started_at: datetime
    ) -> None:
        self._update_task_run(
            task_run_id,
            f"mark task run {task_run_id} started",
            state=TaskState.RUNNING,
            container_id=container_id,
            started_at=_utc(started_at),
        )

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
        stored = (
            None
            if outputs is None
            else json.loads(_json(dict(outputs), f"the outputs of task run {task_run_id}"))
        )
        self._update_task_run(
            task_run_id,
            f"record the end of task run {task_run_id}",
            state=TaskState(state),
            exit_code=exit_code,
            error=None if error is None else clean_text(error),
            ended_at=_utc(ended_at) if ended_at is not None else self._clock(),
            outputs=stored,
            **({"node": clean_text(node)} if node is not None else {}),
        )

    def count_task_run_logs(self, task_run_id: int) -> int:
        with self._call(f"count the log lines of task run {task_run_id}"):
            return self._logs_of_run.get(task_run_id, 0)

    # -- logs -----------------------------------------------------------------------

    def append_log_batches(self, batches: Sequence[NewLogBatch]) -> None:
        # Through append_logs, which tests override to make writes fail.
        self.append_logs(
            [
                NewLogLine(b.execution_id, b.task_run_id, b.task_id, b.stream, line, b.time)
                for b in batches
                for line in b.lines
            ]
        )

    def append_logs(self, lines: Sequence[NewLogLine]) -> None:
        if not lines:
            return
        action = f"store {len(lines)} log lines"
        with self._call(action):
            unknown = {ln.task_run_id for ln in lines} - self._task_runs.keys()
            if unknown:
                raise StoreError(
                    f"cannot {action} in {self.description}: no task run has id"
                    f" {min(unknown)} (FOREIGN KEY constraint failed)"
                )
            for ln in lines:
                record = LogRecord(
                    self._new_id("log"),
                    ln.task_run_id,
                    ln.task_id,
                    _utc(ln.time),
                    ln.stream,
                    clean_text(ln.line),
                )
                self._logs.setdefault(ln.execution_id, []).append(record)
                self._logs_of_run[ln.task_run_id] = self._logs_of_run.get(ln.task_run_id, 0) + 1

    def get_logs(
        self,
        execution_id: str,
        *,
        task_id: str | None = None,
        after: int | None = None,
        limit: int | None = None,
        tail: int | None = None,
    ) -> list[LogRecord]:
        if limit is not None and tail is not None:
            raise UsageError("ask for a limit or a tail of log lines, not both")
        after = None if after is None else check_row_id(after)
        limit = None if limit is None else check_log_limit(limit)
        tail = None if tail is None else check_log_limit(tail)
        with self._call(f"read the logs of execution '{execution_id}'"):
            found = [
                ln
                for ln in self._logs.get(execution_id, ())
                if (task_id is None or ln.task_id == task_id) and (after is None or ln.id > after)
            ]
        if tail is not None:
            return found[-tail:]
        return found if limit is None else found[:limit]

    def count_logs(self, execution_id: str) -> int:
        with self._call(f"count the logs of execution '{execution_id}'"):
            return len(self._logs.get(execution_id, ()))

    # -- artifacts ------------------------------------------------------------------

    def record_artifacts(
        self,
        *,
        execution_id: str,
        task_run_id: int,
        task_id: str,
        artifacts: Sequence[ArtifactFile],
    ) -> None:
        action = f"record {len(artifacts)} artifacts of task '{task_id}'"
        with self._call(action):
            if artifacts and task_run_id not in self._task_runs:
                raise StoreError(
                    f"cannot {action} in {self.description}: no task run has id"
                    f" {task_run_id} (FOREIGN KEY constraint failed)"
                )
            for artifact_id in [
                a.id for a in self._artifacts.values() if a.task_run_id == task_run_id
            ]:
                del self._artifacts[artifact_id]
            now = self._clock()
            for artifact in sorted(artifacts, key=lambda artifact: artifact.path):
                artifact_id = self._new_id("artifact")
                self._artifacts[artifact_id] = ArtifactRecord(
                    id=artifact_id,
                    execution_id=execution_id,
                    task_run_id=task_run_id,
                    task_id=task_id,
                    path=artifact.path,
                    size=artifact.size,
                    sha256=artifact.sha256,
                    local_path=str(artifact.local_path),
                    created_at=now,
                )

    def list_artifacts(
        self, execution_id: str, *, task_id: str | None = None
    ) -> list[ArtifactRecord]:
        with self._call(f"read the artifacts of execution '{execution_id}'"):
            return [
                a
                for a in self._artifacts.values()
                if a.execution_id == execution_id and task_id in (None, a.task_id)
            ]

    def get_artifact(self, artifact_id: int) -> ArtifactRecord:
        with self._call(f"read artifact {artifact_id}"):
            found = self._artifacts.get(check_row_id(artifact_id))
        if found is None:
            raise NotFoundError(f"no artifact has id {artifact_id}")
        return found

    # -- the server: health, tokens, flows, triggers, pauses ----------------------------

    def ping(self) -> None:
        with self._call("reach the store"):
            pass

    def add_token(self, token: ApiToken) -> None:
        with self._call(f"record token '{token.name}'"):
            if token.name in self._tokens:
                raise ConflictError(
                    f"a token named {token.name!r} exists: revoke it first, or choose another name"
                )
            self._tokens[token.name] = token

    def find_token(self, digest: str) -> ApiToken | None:
        with self._call("look up a token"):
            return next((t for t in self._tokens.values() if t.digest == digest), None)

    def list_tokens(self) -> list[ApiToken]:
        with self._call("list tokens"):
            return [self._tokens[name] for name in sorted(self._tokens)]

    def remove_token(self, name: str) -> bool:
        with self._call(f"revoke token '{name}'"):
            return self._tokens.pop(name, None) is not None

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
        with self._call(f"record revision {revision} of flow {namespace}.{flow_id}"):
            key = (namespace, flow_id, revision)
            if key in self._revisions:
                return False
            self._revisions[key] = _utc(at)
            return True

    def flow_states(
        self, *, namespace: str | None = None, flow_id: str | None = None
    ) -> dict[tuple[str, str], FlowState]:
        def wanted(ns: str, fid: str) -> bool:
            return namespace in (None, ns) and flow_id in (None, fid)

        with self._call("read the states of flows"):
            keys = {k for k in self._pauses if wanted(*k)}
            keys |= {(ns, fid) for ns, fid, _ in self._triggers if wanted(ns, fid)}
            return {
                key: FlowState(
                    key[0],
                    key[1],
                    self._pauses.get(key),
                    {
                        tid: state
                        for (ns, fid, tid), state in sorted(self._triggers.items())
                        if (ns, fid) == key
                    },
                )
                for key in sorted(keys)
            }

    def set_flow_paused(self, namespace: str, flow_id: str, *, paused: bool, at: datetime) -> None:
        with self._call(f"{'pause' if paused else 'unpause'} flow {namespace}.{flow_id}"):
            key = (namespace, flow_id)
            if paused:
                self._pauses.setdefault(key, _utc(at))
                return
            self._pauses.pop(key, None)
            for trigger_key, state in list(self._triggers.items()):
                if trigger_key[:2] == key and state.disabled_at is not None:
                    self._triggers[trigger_key] = replace(
                        state, disabled_at=None, disabled_reason=None, execution_id=None
                    )

    def _trigger(self, key: tuple[str, str, str], at: datetime) -> TriggerState:
        found = self._triggers.get(key)
        if found is None:
            found = self._triggers[key] = TriggerState(
                key[0], key[1], key[2], _utc(at), None, None, None, None, None
            )
        return found

    def init_trigger(self, namespace: str, flow_id: str, trigger_id: str, *, at: datetime) -> None:
        with self._call(f"record trigger {trigger_id} of flow {namespace}.{flow_id}"):
            key = (namespace, flow_id, trigger_id)
            if key not in self._triggers:
                self._triggers[key] = replace(self._trigger(key, at), last_at=_utc(at))

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
        with self._call(f"move trigger {trigger_id} of flow {namespace}.{flow_id}"):
            key = (namespace, flow_id, trigger_id)
            state = self._trigger(key, fired_at or last_at or self._clock())
            if last_at is not None and (state.last_at is None or state.last_at < _utc(last_at)):
                state = replace(state, last_at=_utc(last_at))
            if execution_id is not None:
                when = _utc(fired_at or self._clock())
                if state.fired_at is None or state.fired_at <= when:
                    state = replace(state, execution_id=execution_id, fired_at=when)
            self._triggers[key] = state

    def disable_trigger(
        self, namespace: str, flow_id: str, trigger_id: str, *, reason: str, at: datetime
    ) -> None:
        with self._call(f"disable trigger {trigger_id} of flow {namespace}.{flow_id}"):
            key = (namespace, flow_id, trigger_id)
            if key in self._triggers:
                self._triggers[key] = replace(
                    self._triggers[key], disabled_at=_utc(at), disabled_reason=clean_text(reason)
                )

    def fired_times(
        self, namespace: str, flow_id: str, trigger_id: str, *, start: datetime, end: datetime
    ) -> dict[datetime, str]:
        begin, until = _utc(start), _utc(end)
        with self._call(f"read the times trigger {trigger_id} fired"):
            return {
                scheduled: execution_id
                for (ns, fid, tid, _), (scheduled, execution_id) in self._fires.items()
                if (ns, fid, tid) == (namespace, flow_id, trigger_id)
                and scheduled is not None
                and begin <= scheduled < until
            }

    def ended_executions(
        self, namespace: str, flow_id: str, *, since: datetime, limit: int = 1000
    ) -> list[ExecutionRecord]:
        check_limit(limit)
        after = _utc(since)
        with self._call(f"read the ended executions of {namespace}.{flow_id}"):
            rows = sorted(
                (
                    r
                    for r in self._executions.values()
                    if (r.namespace, r.flow_id) == (namespace, flow_id)
                    and r.ended_at is not None
                    and r.ended_at >= after
                ),
                key=lambda r: (r.ended_at, r.id),
            )
            return [self._record(r) for r in rows[:limit]]

    def pause_task_run(self, task_run_id: int, *, started_at: datetime) -> None:
        self._update_task_run(
            task_run_id,
            f"mark task run {task_run_id} paused",
            state=TaskState.PAUSED,
            started_at=_utc(started_at),
        )

    def take_paused(self, execution_id: str, owner: LeaseOwner) -> bool:
        with self._call(f"take paused execution '{execution_id}'"):
            row = self._execution(execution_id)
            if row.state is not ExecutionState.PAUSED:
                return False
            row.state, row.error, row.ended_at, row.kill_requested_at = (
                ExecutionState.CREATED,
                None,
                None,
                None,
            )
            self._lease_to(row, owner)
            return True

    def heartbeat_many(self, token: str, execution_ids: Sequence[str]) -> dict[str, Beat]:
        with self._call(f"renew the leases of {len(execution_ids)} executions"):
            beats = {}
            now = self._clock()
            for execution_id in execution_ids:
                row = self._executions.get(execution_id)
                if row is None or row.lease_token != token:
                    beats[execution_id] = Beat.LOST
                    continue
                row.heartbeat_at = now
                beats[execution_id] = Beat.KILL if row.kill_requested_at is not None else Beat.KEPT
            return beats


def _fresh_run(run: TaskRunRecord) -> TaskRunRecord:
    """A task run whose outputs the caller may change without changing the store."""
    if run.outputs is None:
        return run
    return replace(run, outputs=json.loads(json.dumps(run.outputs)))


# -- PostgreSQL for tests --------------------------------------------------------------------------

POSTGRES_URL_ENV = "RUNNER_TEST_POSTGRES_URL"
"""A URL like `postgresql+psycopg://runner:runner@127.0.0.1:5432/runner_test`; its user
needs CREATEDB. Tests create (and drop) their own databases next to that one."""


def postgres_problem(url: str) -> str | None:
    """Why the server at `url` cannot be used for tests, or None if it can."""
    from sqlalchemy import create_engine, make_url
    from sqlalchemy import exc as sa_exc

    engine = create_engine(url, connect_args={"connect_timeout": 5})
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
    except sa_exc.SQLAlchemyError as exc:
        reason = str(getattr(exc, "orig", exc)).strip().splitlines()
        shown = make_url(url).render_as_string(hide_password=True)
        return f"PostgreSQL at {shown} is not usable: {reason[0] if reason else exc}"
    finally:
        engine.dispose()
    return None


@contextmanager
def temporary_postgres_database(url: str) -> Iterator[str]:
    """Create a uniquely named, empty database on the server of `url`, yield its URL and
    drop it afterwards (even if a connection to it is still open)."""
    from sqlalchemy import create_engine, make_url

    base = make_url(url)
    name = f"runner_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
        try:
            yield base.set(database=name).render_as_string(hide_password=False)
        finally:
            _drop_database(admin, name)
    finally:
        admin.dispose()


def _drop_database(admin: Engine, name: str) -> None:
    """Drop `name`, ending the connections still open to it.

    Not `DROP DATABASE ... WITH (FORCE)`: it must also end an autovacuum worker busy in
    that database (likely after a test that wrote a lot), which only a superuser may, so
    it fails now and then. A plain DROP makes autovacuum workers leave by itself; our own
    connections are ended first, and a connection that races in is retried."""
    from sqlalchemy import exc as sa_exc

    for tries in range(20):
        with admin.connect() as conn:
            conn.exec_driver_sql(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = %(name)s AND pid <> pg_backend_pid()"
                " AND usename = current_user",
                {"name": name},
            )
            try:
                conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}"')
                return
            except sa_exc.OperationalError:  # "is being accessed by other users"
                if tries == 19:
                    raise
        time.sleep(0.25)


if TYPE_CHECKING:
    from runner.store.base import Store

    _: type[Store] = InMemoryStore  # mypy checks that the double keeps the whole contract
