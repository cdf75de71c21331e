"""`SqlStore`: the `Store` contract (see `base.py`) kept in SQLite or PostgreSQL through
SQLAlchemy Core. Each method is one short transaction; SQLAlchemy and driver errors are
translated here into `StoreError` (or `NotFoundError` for an id that matches nothing),
with one line naming what failed.

A database outage does not end a run at once. A write that fails on a connection-level
error (the connection dropped, the server is restarting or refuses connections, SQLite
stayed locked) is a `TransientStoreError`, tried again after 0.2 s, then 0.4 s, ... up to
5 s between tries, on a fresh connection (`pool_pre_ping` drops the dead ones). One
outage clock serves the whole store: it starts at the first such failure and stops at the
next write that succeeds. Once it passes the limit (`RUNNER_DB_RETRY_SECONDS`, default
60 s) every failing write raises `StoreUnavailableError` at once, so all the run's threads
give up together. Any other failure (a constraint, bad data) is permanent: raised at once,
never retried. Log lines are retried by the `LogWriter`, which keeps them buffered.

Retrying is safe because every write is one transaction and is idempotent when tried
again: updates set the same values, and before retrying an insert the store looks for the
row by its natural key (execution id; execution, task and attempt) in case the first try
committed and only its reply was lost. A batch of log lines has no such key: in that one
corner (the COMMIT reached the server, the connection dropped before its reply) the batch
is stored twice. SQLAlchemy cannot tell that case apart from a failed commit.

Leases use the database's clock: every `heartbeat_at` is the database's now (on SQLite,
UTC with milliseconds, in the column's text format), and expiry is compared in SQL, so
two machines whose clocks disagree still agree on who holds an execution.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from datetime import UTC, datetime, timedelta
from functools import wraps
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, TypeVar

from sqlalchemy import (
    ColumnElement,
    Connection,
    Engine,
    Interval,
    Table,
    case,
    delete,
    func,
    insert,
    literal,
    make_url,
    or_,
    select,
    update,
)
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.pool import StaticPool

from runner.errors import AlreadyFiredError, ConflictError, NotFoundError, StoreError, UsageError
from runner.execution import ExecutionState, TaskState
from runner.logs import module_logger
from runner.settings import (
    DB_RETRY_FIRST_S,
    DB_RETRY_MAX_S,
    DB_RETRY_SECONDS_ENV,
    DEFAULT_DB_RETRY_SECONDS,
    db_retry_seconds,
)
from runner.store import engine as engines
from runner.store.base import Store
from runner.store.log_insert import insert_log_batches, sqlite_log_insert
from runner.store.models import (
    api_tokens,
    executions,
    flow_locks,
    flow_pauses,
    flow_revisions,
    log_lines,
    task_runs,
    trigger_fires,
    trigger_states,
)
from runner.store.models import artifacts as artifacts_table
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
    StoreUnavailableError,
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

# An execution in one of these states has (or should have) a process running it.
_ACTIVE_STATES = (
    ExecutionState.CREATED.value,
    ExecutionState.QUEUED.value,
    ExecutionState.RUNNING.value,
)
# The text format of UTCDateTime on SQLite, made by SQLite itself ('now', UTC): its clock
# gives milliseconds, padded to the microseconds of the column's format.
_SQLITE_NOW = "%Y-%m-%d %H:%M:%f000"

P = ParamSpec("P")
T = TypeVar("T")

log = module_logger(__name__)


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _retried(
    method: Callable[Concatenate[SqlStore, P], T],
) -> Callable[Concatenate[SqlStore, P], T]:
    """Retry a write method on connection-level errors (see `SqlStore._retrying`). Only
    for writes that are idempotent when tried again (updates)."""

    @wraps(method)
    def retried(self: SqlStore, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return self._retrying(lambda: method(self, *args, **kwargs))

    return retried


class SqlStore:
    """The store in a SQL database. Open with `SqlStore.open(url)`; close when done.

    Safe to share between threads: each call takes its own pooled connection.
    """

    def __init__(self, engine: Engine, *, retry_seconds: float = DEFAULT_DB_RETRY_SECONDS) -> None:
        """Wrap an engine whose database is already migrated; use `SqlStore.open` instead."""
        self._engine = engine
        self._writer = engine.execution_options(**{engines.WRITE: True})
        self._description = engines.describe(engine.url)
        self._sqlite_log_insert = sqlite_log_insert(engine.dialect)
        self._sqlite = engine.dialect.name == "sqlite"
        # An in-memory SQLite database lives in one connection shared by all threads,
        # so its calls take turns.
        self._serial: AbstractContextManager[Any] = (
            threading.RLock() if isinstance(engine.pool, StaticPool) else nullcontext()
        )
        self._retry_seconds = retry_seconds
        self._outage_lock = threading.Lock()
        self._failing_since: float | None = None  # the outage clock (time.monotonic)

    # -- opening and closing ---------------------------------------------------------

    @classmethod
    def open(
        cls, url: str, *, upgrade: bool = True, retry_seconds: float | None = None
    ) -> SqlStore:
        """Connect to `url`, bring its tables up to date (Alembic `upgrade head`, unless
        `upgrade` is False) and return the store. Any failure is a `StoreError` naming the
        database. Connecting is not retried: a wrong URL or a server that is down is
        reported at once. `retry_seconds` (default `RUNNER_DB_RETRY_SECONDS`, else 60) is
        how long later writes are retried in an outage."""
        retry_for = db_retry_seconds() if retry_seconds is None else retry_seconds
        try:
            parsed = make_url(url)
        except (sa_exc.ArgumentError, ValueError) as exc:
            raise StoreError(
                f"invalid database URL '{engines.mask_password(url)}': {engines.reason(exc)}"
            ) from exc
        where = engines.describe(parsed)
        engine = engines.create(parsed, where)
        try:
            try:
                with engine.connect():
                    pass
            except sa_exc.SQLAlchemyError as exc:
                verb = "open" if parsed.get_backend_name() == "sqlite" else "connect to"
                raise StoreError(f"cannot {verb} {where}: {engines.reason(exc)}") from exc
            store = cls(engine, retry_seconds=retry_for)
            if upgrade:
                store._upgrade()
        except BaseException:
            engine.dispose()
            raise
        return store

    def close(self) -> None:
        """Close the pooled connections; do not use the store afterwards."""
        self._engine.dispose()

    def __enter__(self) -> SqlStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def url(self) -> str:
        """The database URL, with the password hidden."""
        return self._engine.url.render_as_string(hide_password=True)

    @property
    def description(self) -> str:
        """The database as messages name it: `postgresql database 'runner' at host:5432`."""
        return self._description

    def __repr__(self) -> str:
        return f"SqlStore({self.url!r})"

    # -- schema ----------------------------------------------------------------------

    def schema_revision(self) -> SchemaRevision:
        """The database's migration revision and the newest one this runner ships."""
        with self._reading("read the schema revision") as conn:
            return engines.schema_revision(conn)

    def upgrade_schema(self) -> SchemaRevision:
        """Run the migrations up to the newest (Alembic `upgrade head`; `open` does this
        unless told not to). Safe while other processes use or upgrade the database."""
        self._upgrade()
        return self.schema_revision()

    def _upgrade(self) -> None:
        with self._serial:
            try:
                engines.migrate(self._engine, self._description)
            except sa_exc.SQLAlchemyError as exc:  # Alembic's errors: see engines.migrate
                raise StoreError(
                    f"cannot create or upgrade the tables of {self._description}:"
                    f" {engines.reason(exc)}"
                ) from exc

    # -- transactions ----------------------------------------------------------------

    @contextmanager
    def _writing(self, action: str) -> Iterator[Connection]:
        """One write transaction; errors become a StoreError saying what was being done:
        a TransientStoreError for a connection-level one, which starts the outage clock
        (a commit stops it), a StoreUnavailableError once that clock passed the limit."""
        with self._serial:
            try:
                with self._writer.begin() as conn:
                    yield conn
            except sa_exc.SQLAlchemyError as exc:
                message = f"cannot {action} in {self._description}: {engines.reason(exc)}"
                if not engines.is_transient(exc):
                    raise StoreError(message) from exc
                if self._outage_left() <= 0:
                    raise StoreUnavailableError(self._given_up(message)) from exc
                raise TransientStoreError(message) from exc
        if self._failing_since is not None:
            self._outage_over()

    def _retrying(
        self, write: Callable[[], T], *, written: Callable[[], T | None] | None = None
    ) -> T:
        """`write()`, tried again on connection-level errors with a growing pause (0.2 s
        doubling to 5 s) until it succeeds or the outage clock passes the retry limit.
        A permanent error is raised at once.

        `written`, for inserts, looks for the row the first try may have committed before
        its connection dropped; what it finds is returned instead of inserting again.
        """
        pause = DB_RETRY_FIRST_S
        tries = 0
        while True:
            tries += 1
            try:
                if tries > 1 and written is not None:
                    found = written()
                    if found is not None:
                        self._outage_over()
                        return found
                return write()
            except TransientStoreError as exc:
                left = self._outage_left()
                if left <= 0:
                    raise StoreUnavailableError(self._given_up(str(exc))) from exc.__cause__
                wait = min(pause, left)
                log.warning(
                    "store_write_retrying", error=str(exc), tries=tries, retry_in_s=round(wait, 2)
                )
                time.sleep(wait)
                pause = min(pause * 2, DB_RETRY_MAX_S)

    def _outage_left(self) -> float:
        """Start the outage clock unless it runs; the seconds left before giving up."""
        with self._outage_lock:
            now = time.monotonic()
            if self._failing_since is None:
                self._failing_since = now
                log.warning("store_unreachable", database=self._description)
            return self._retry_seconds - (now - self._failing_since)

    def _outage_over(self) -> None:
        with self._outage_lock:
            if self._failing_since is not None:
                down_s = round(time.monotonic() - self._failing_since, 3)
                self._failing_since = None
                log.info("store_reachable", database=self._description, down_s=down_s)

    def _given_up(self, message: str) -> str:
        return (
            f"{message}; gave up after {self._retry_seconds:g} s of retries"
            f" ({DB_RETRY_SECONDS_ENV} sets how long)"
        )

    @contextmanager
    def _reading(self, action: str) -> Iterator[Connection]:
        with self._serial:
            try:
                with self._engine.connect() as conn:
                    yield conn
            except sa_exc.SQLAlchemyError as exc:
                message = f"cannot {action} in {self._description}: {engines.reason(exc)}"
                if engines.is_transient(exc):
                    raise TransientStoreError(message) from exc
                raise StoreError(message) from exc

    # -- the database's clock --------------------------------------------------------

    def _db_now(self) -> ColumnElement[Any]:
        """The database's current time, as a value for a UTCDateTime column."""
        if self._sqlite:
            return func.strftime(_SQLITE_NOW, "now")
        return func.now()

    def _db_ago(self, seconds: float) -> ColumnElement[Any]:
        """The database's time `seconds` ago, comparable with a UTCDateTime column."""
        if self._sqlite:
            return func.strftime(_SQLITE_NOW, "now", literal(f"-{seconds:.3f} seconds"))
        return func.now() - literal(timedelta(seconds=seconds), Interval())

    # -- executions ------------------------------------------------------------------

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
        """Record a new execution in state CREATED; `execution_id` is a uuid4 hex.

        `owner` is the process that runs it: its lease starts now (see `heartbeat`). With
        `fire`, the trigger firing is recorded in the same transaction, its key unique per
        (namespace, flow, trigger): a key recorded before raises AlreadyFiredError and
        nothing is recorded (Postgres waits for a concurrent insert of the key to commit or
        roll back, so exactly one of two servers firing the same time wins)."""
        lease: dict[str, Any] = {}
        if owner is not None:
            lease = {**_owner_values(owner), "heartbeat_at": self._db_now()}
        values = {
            "id": execution_id,
            "flow_id": flow_id,
            "namespace": namespace,
            "revision": revision,
            "source": source,
            "inputs": clean_json(dict(inputs), f"the inputs of execution '{execution_id}'"),
            "labels": clean_json(dict(labels), f"the labels of execution '{execution_id}'"),
            "state": ExecutionState.CREATED.value,
            "created_at": _utcnow(),
            "flow_path": flow_path,
            "trigger": None
            if trigger is None
            else clean_json(dict(trigger), f"the trigger of execution '{execution_id}'"),
            **lease,
        }

        def insert_row() -> str:
            with self._writing(f"record execution '{execution_id}'") as conn:
                conn.execute(insert(executions).values(**values))
                if fire is not None:
                    self._record_fire(conn, fire, namespace, flow_id, execution_id)
            return execution_id

        def recorded() -> str | None:
            query = select(executions.c.id).where(executions.c.id == execution_id)
            with self._reading(f"look up execution '{execution_id}'") as conn:
                found = conn.execute(query).scalar_one_or_none()
            return None if found is None else str(found)

        self._retrying(insert_row, written=recorded)

    def _record_fire(
        self, conn: Connection, fire: TriggerFire, namespace: str, flow_id: str, execution_id: str
    ) -> None:
        """Insert the firing's row, or raise AlreadyFiredError (rolling back the caller's
        transaction) if its key is taken."""
        inserted = conn.execute(
            _insert_or_ignore(conn, trigger_fires)
            .values(
                namespace=namespace,
                flow_id=flow_id,
                trigger_id=fire.trigger_id,
                fire_key=fire.key,
                scheduled_at=fire.scheduled_at,
                execution_id=execution_id,
                backfill=fire.backfill,
                created_at=_utcnow(),
            )
            .on_conflict_do_nothing()
            .returning(trigger_fires.c.id)
        ).first()
        if inserted is not None:
            return
        holder = conn.execute(
            select(trigger_fires.c.execution_id).where(
                trigger_fires.c.namespace == namespace,
                trigger_fires.c.flow_id == flow_id,
                trigger_fires.c.trigger_id == fire.trigger_id,
                trigger_fires.c.fire_key == fire.key,
            )
        ).scalar_one_or_none()
        raise AlreadyFiredError(
            f"trigger {fire.trigger_id!r} of flow {namespace}.{flow_id} already fired for"
            f" {fire.key} (execution {holder})",
            execution_id=None if holder is None else str(holder),
        )

    @_retried
    def set_execution_state(
        self, execution_id: str, state: ExecutionState, *, error: str | None = None
    ) -> None:
        """Move an execution to `state` with `error` (None clears it).

        The first move to RUNNING sets `started_at`; a final state sets `ended_at`, and a
        state that is not final clears it (an execution being restarted).
        """
        now = _utcnow()
        values: dict[str, Any] = {
            "state": state.value,
            "error": None if error is None else clean_text(error),
            "ended_at": now if state.is_final else None,
        }
        if state is ExecutionState.RUNNING:
            values["started_at"] = func.coalesce(
                executions.c.started_at, literal(now, executions.c.started_at.type)
            )
        with self._writing(f"set the state of execution '{execution_id}'") as conn:
            result = conn.execute(
                update(executions).where(executions.c.id == execution_id).values(**values)
            )
            found = result.rowcount
        if found == 0:
            raise NotFoundError(f"no execution matches '{execution_id}'")

    def get_execution(self, execution_id_or_prefix: str) -> ExecutionRecord:
        """The execution with this id, or the only one whose id starts with it.

        A prefix needs at least 4 characters. Raises NotFoundError when nothing matches
        or when the prefix matches more than one execution (naming them).
        """
        wanted = execution_id_or_prefix.strip()
        with self._reading(f"read execution '{wanted}'") as conn:
            row = conn.execute(select(executions).where(executions.c.id == wanted)).one_or_none()
            if row is None and len(wanted) >= MIN_PREFIX:
                rows = conn.execute(
                    select(executions)
                    .where(*_id_prefix_conditions(wanted))
                    .order_by(executions.c.created_at.desc(), executions.c.id.desc())
                    .limit(11)
                ).all()
                if len(rows) > 1:
                    raise NotFoundError(ambiguous_prefix(wanted, [r.id for r in rows]))
                row = rows[0] if rows else None
            if row is None:
                raise NotFoundError(no_match(wanted))
            runs = self._task_runs_of(conn, [row.id])
        return _execution_record(row, runs.get(row.id, ()))

    def get_execution_source(self, execution_id: str) -> str:
        """The flow file's text as it was when the execution was created (for restarts)."""
        with self._reading(f"read execution '{execution_id}'") as conn:
            source = conn.execute(
                select(executions.c.source).where(executions.c.id == execution_id)
            ).scalar_one_or_none()
        if source is None:
            raise NotFoundError(f"no execution matches '{execution_id}'")
        return str(source)

    def execution_flow_path(self, execution_id: str) -> str | None:
        with self._reading(f"read execution '{execution_id}'") as conn:
            found = conn.execute(
                select(executions.c.flow_path).where(executions.c.id == execution_id)
            ).scalar_one_or_none()
        return None if found is None else str(found)

    def list_executions(
        self,
        where: ExecutionFilter | None = None,
        *,
        after: str | None = None,
        limit: int = 20,
    ) -> Page[ExecutionRecord]:
        """The executions `where` matches, newest first by (created_at, id), each with its
        task runs, `limit` a page; `after` is the previous page's `next_cursor`."""
        check_limit(limit)
        query = select(executions).where(*_filter_conditions(where or ExecutionFilter()))
        if after is not None:
            created_at, last_id = decode_cursor(after)
            # The first condition bounds the index range: with the OR alone, both
            # databases walk the index from the newest execution and filter, a page deep
            # in the history costing as much as every page before it.
            query = query.where(
                executions.c.created_at <= created_at,
                or_(executions.c.created_at < created_at, executions.c.id < last_id),
            )
        query = query.order_by(executions.c.created_at.desc(), executions.c.id.desc())
        with self._reading("list executions") as conn:
            rows = conn.execute(query.limit(limit + 1)).all()
            rows, more = rows[:limit], len(rows) > limit
            runs = self._task_runs_of(conn, [r.id for r in rows])
        records = tuple(_execution_record(r, runs.get(r.id, ())) for r in rows)
        last = records[-1] if more else None
        return Page(records, None if last is None else encode_cursor(last.created_at, last.id))

    @staticmethod
    def _task_runs_of(
        conn: Connection, execution_ids: Sequence[str]
    ) -> dict[str, tuple[TaskRunRecord, ...]]:
        """The task runs of all these executions in one query, by execution id."""
        if not execution_ids:
            return {}
        rows = conn.execute(
            select(task_runs)
            .where(task_runs.c.execution_id.in_(execution_ids))
            .order_by(task_runs.c.id)
        ).all()
        grouped: dict[str, list[TaskRunRecord]] = {}
        for r in rows:
            grouped.setdefault(r.execution_id, []).append(_task_run_record(r))
        return {key: tuple(value) for key, value in grouped.items()}

    def execution_states(self, execution_ids: Sequence[str]) -> dict[str, ExecutionState]:
        """The state of each of these executions that this database knows."""
        found: dict[str, ExecutionState] = {}
        ids = list(execution_ids)
        with self._reading("read execution states") as conn:
            for start in range(0, len(ids), 500):
                rows = conn.execute(
                    select(executions.c.id, executions.c.state).where(
                        executions.c.id.in_(ids[start : start + 500])
                    )
                ).all()
                found.update((r.id, ExecutionState(r.state)) for r in rows)
        return found

    # -- leases, kill requests and flow concurrency ------------------------------------

    def heartbeat(self, execution_id: str, token: str) -> Beat:
        """Renew the lease held with `token` (the database's now); say whether a kill was
        requested meanwhile or the lease was taken over by another process."""
        with self._writing(f"renew the lease of execution '{execution_id}'") as conn:
            row = conn.execute(
                update(executions)
                .where(executions.c.id == execution_id, executions.c.lease_token == token)
                .values(heartbeat_at=self._db_now())
                .returning(executions.c.kill_requested_at)
            ).one_or_none()
        if row is None:
            return Beat.LOST
        return Beat.KILL if row.kill_requested_at is not None else Beat.KEPT

    def request_kill(self, execution_id: str) -> ExecutionState:
        """Ask whoever runs the execution to kill it; returns its state at that moment
        (a final state means there was nothing to kill)."""
        with self._writing(f"ask execution '{execution_id}' to stop") as conn:
            conn.execute(
                update(executions)
                .where(
                    executions.c.id == execution_id,
                    executions.c.state.in_(_ACTIVE_STATES),
                    executions.c.kill_requested_at.is_(None),
                )
                .values(kill_requested_at=_utcnow())
            )
            state = conn.execute(
                select(executions.c.state).where(executions.c.id == execution_id)
            ).scalar_one_or_none()
        if state is None:
            raise NotFoundError(f"no execution matches '{execution_id}'")
        return ExecutionState(state)

    def active_leases(self, execution_id: str | None = None, *, lease_s: float) -> list[Lease]:
        """Every execution not in a final state (or just `execution_id`'s), oldest first,
        with its lease; `expired` is decided here, by the database's clock."""
        heartbeat_at = executions.c.heartbeat_at
        expired = case(
            (heartbeat_at.is_(None), literal(True)),
            (heartbeat_at < self._db_ago(lease_s), literal(True)),
            else_=literal(False),
        ).label("expired")
        query = select(
            executions.c.id,
            executions.c.created_at,
            executions.c.state,
            executions.c.owner_host,
            executions.c.owner_pid,
            executions.c.owner_boot_id,
            executions.c.lease_token,
            heartbeat_at,
            executions.c.kill_requested_at,
            expired,
        )
        if execution_id is not None:
            query = query.where(
                executions.c.id == execution_id, executions.c.state.in_(_ACTIVE_STATES)
            )
        else:
            # Every command runs this when it opens the store. Given the statistics of a
            # long history (ANALYZE: two states, 50,000 executions each), SQLite expects
            # half of it to be active and reads all of it (0.2 s of 100,000), in
            # created_at order for ORDER BY; the ids from the (state, created_at, id)
            # index alone, then the rows by primary key, it reads only the few.
            active = select(executions.c.id).where(executions.c.state.in_(_ACTIVE_STATES))
            query = query.where(executions.c.id.in_(active.scalar_subquery()))
        with self._reading("look for running executions") as conn:
            rows = conn.execute(query).all()
        rows = sorted(rows, key=lambda r: (r.created_at, r.id))  # oldest first; a few
        return [
            Lease(
                execution_id=r.id,
                state=r.state,
                owner_host=r.owner_host,
                owner_pid=r.owner_pid,
                token=r.lease_token,
                heartbeat_at=r.heartbeat_at,
                kill_requested=r.kill_requested_at is not None,
                owner_boot_id=r.owner_boot_id,
                expired=bool(r.expired),
            )
            for r in rows
        ]

    def take_lease(self, lease: Lease, owner: LeaseOwner) -> bool:
        """Take over an expired lease, unless someone renewed or took it since `lease` was
        read (compare-and-set on its token and heartbeat). True if this owner has it now."""
        condition = [executions.c.id == lease.execution_id]
        condition.append(
            executions.c.lease_token.is_(None)
            if lease.token is None
            else executions.c.lease_token == lease.token
        )
        condition.append(
            executions.c.heartbeat_at.is_(None)
            if lease.heartbeat_at is None
            else executions.c.heartbeat_at == lease.heartbeat_at
        )
        with self._writing(f"take over execution '{lease.execution_id}'") as conn:
            taken = conn.execute(
                update(executions)
                .where(*condition)
                .values(**_owner_values(owner), heartbeat_at=self._db_now())
            ).rowcount
        return taken == 1

    def reopen_execution(self, execution_id: str, owner: LeaseOwner) -> None:
        """Make an ended execution runnable again (a restart): CREATED, no error, no end,
        no pending kill, leased by `owner`. Refused unless it ended FAILED or KILLED."""
        restartable = (ExecutionState.FAILED.value, ExecutionState.KILLED.value)
        with self._writing(f"reopen execution '{execution_id}'") as conn:
            reopened = conn.execute(
                update(executions)
                .where(executions.c.id == execution_id, executions.c.state.in_(restartable))
                .values(
                    state=ExecutionState.CREATED.value,
                    error=None,
                    ended_at=None,
                    kill_requested_at=None,
                    heartbeat_at=self._db_now(),
                    **_owner_values(owner),
                )
            ).rowcount
        if reopened == 0:
            state = self.get_execution(execution_id).state
            raise UsageError(not_restartable(execution_id, state))

    def try_start(
        self, execution_id: str, *, namespace: str, flow_id: str, limit: int, lease_s: float
    ) -> list[str]:
        """Move the execution to RUNNING if its flow has fewer than `limit` executions
        running and no queued one ahead of it; return [] then, else the ids of the running
        ones (the execution does not change state).

        Runs in one transaction that first writes the flow's lock row, so the check and
        the move are atomic across processes (a row lock on Postgres; SQLite's writers
        take the database lock up front). Executions whose lease has expired by the
        database's clock do not count: their runner is gone."""
        key = f"{namespace}.{flow_id}"
        same_flow = (executions.c.namespace == namespace, executions.c.flow_id == flow_id)
        with self._writing(f"take a concurrency slot of flow '{key}'") as conn:
            self._lock_flow(conn, key)
            fresh = self._db_ago(lease_s)
            running = list(
                conn.execute(
                    select(executions.c.id)
                    .where(
                        *same_flow,
                        executions.c.state == ExecutionState.RUNNING.value,
                        executions.c.heartbeat_at >= fresh,
                        executions.c.id != execution_id,
                    )
                    .order_by(executions.c.created_at, executions.c.id)
                ).scalars()
            )
            me = conn.execute(
                select(executions.c.created_at).where(executions.c.id == execution_id)
            ).scalar_one_or_none()
            if me is None:
                raise NotFoundError(f"no execution matches '{execution_id}'")
            ahead = conn.execute(
                select(func.count())
                .select_from(executions)
                .where(
                    *same_flow,
                    executions.c.state == ExecutionState.QUEUED.value,
                    executions.c.heartbeat_at >= fresh,
                    executions.c.id != execution_id,
                    executions.c.created_at < me,
                )
            ).scalar_one()
            if len(running) + ahead >= limit:
                return running or ["(queued ahead)"]
            conn.execute(
                update(executions)
                .where(executions.c.id == execution_id)
                .values(
                    state=ExecutionState.RUNNING.value,
                    started_at=func.coalesce(
                        executions.c.started_at, literal(_utcnow(), executions.c.started_at.type)
                    ),
                )
            )
        return []

    def _lock_flow(self, conn: Connection, key: str) -> None:
        conn.execute(
            _insert_or_ignore(conn, flow_locks).values(flow_key=key).on_conflict_do_nothing()
        )
        conn.execute(
            update(flow_locks).where(flow_locks.c.flow_key == key).values(touched_at=_utcnow())
        )

    # -- task runs -------------------------------------------------------------------

    def create_task_run(
        self, *, execution_id: str, task_id: str, attempt: int, image: str | None
    ) -> int:
        """Record a new attempt of a task in state CREATED; returns its id."""
        return self._insert_task_run(
            f"record attempt {attempt} of task '{task_id}'",
            execution_id=execution_id,
            task_id=task_id,
            attempt=attempt,
            state=TaskState.CREATED.value,
            image=image,
            created_at=_utcnow(),
        )

    def task_run_started(
        self, task_run_id: int, *, container_id: str | None, started_at: datetime
    ) -> None:
        """Mark a task run RUNNING in the container `container_id`."""
        self._update_task_run(
            task_run_id,
            "mark task run {id} started",
            state=TaskState.RUNNING.value,
            container_id=container_id,
            started_at=started_at,
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
        """Record how a task run ended (`ended_at` defaults to now)."""
        self._update_task_run(
            task_run_id,
            "record the end of task run {id}",
            state=state.value,
            exit_code=exit_code,
            error=None if error is None else clean_text(error),
            ended_at=ended_at or _utcnow(),
            outputs=None
            if outputs is None
            else clean_json(dict(outputs), f"the outputs of task run {task_run_id}"),
            **({"node": clean_text(node)} if node is not None else {}),
        )

    def record_skipped(
        self, *, execution_id: str, task_id: str, reason: str, attempt: int = 1
    ) -> int:
        """Record a task that will not run (state SKIPPED, `reason` as its error); returns
        the task run's id. `attempt` is 1 but in a restarted execution."""
        now = _utcnow()
        return self._insert_task_run(
            f"record task '{task_id}' as skipped",
            execution_id=execution_id,
            task_id=task_id,
            attempt=attempt,
            state=TaskState.SKIPPED.value,
            error=clean_text(reason),
            created_at=now,
            ended_at=now,
        )

    def _insert_task_run(
        self, action: str, *, execution_id: str, task_id: str, attempt: int, **values: Any
    ) -> int:
        """Insert a task run; a retry first looks for the row by execution, task and
        attempt (one row each), which the first try may have committed."""

        def insert_row() -> int:
            with self._writing(action) as conn:
                result = conn.execute(
                    insert(task_runs).values(
                        execution_id=execution_id, task_id=task_id, attempt=attempt, **values
                    )
                )
                key = result.inserted_primary_key
            assert key is not None
            return int(key[0])

        def recorded() -> int | None:
            query = select(task_runs.c.id).where(
                task_runs.c.execution_id == execution_id,
                task_runs.c.task_id == task_id,
                task_runs.c.attempt == attempt,
            )
            with self._reading(f"look up attempt {attempt} of task '{task_id}'") as conn:
                found = conn.execute(query.order_by(task_runs.c.id).limit(1)).scalar()
            return None if found is None else int(found)

        return self._retrying(insert_row, written=recorded)

    def _update_task_run(self, task_run_id: int, action: str, **values: Any) -> None:
        def update_row() -> int:
            with self._writing(action.format(id=task_run_id)) as conn:
                result = conn.execute(
                    update(task_runs).where(task_runs.c.id == task_run_id).values(**values)
                )
                return result.rowcount

        found = self._retrying(update_row)
        if found == 0:
            raise NotFoundError(f"no task run has id {task_run_id}")

    def count_task_run_logs(self, task_run_id: int) -> int:
        """How many lines of this task run are stored (where a recovery resumes)."""
        # Through the (execution_id, id) index: log_lines has no index on task_run_id (one
        # more index would slow every insert), so without the execution the count would
        # read every line of the history.
        execution = select(task_runs.c.execution_id).where(task_runs.c.id == task_run_id)
        with self._reading(f"count the log lines of task run {task_run_id}") as conn:
            return int(
                conn.execute(
                    select(func.count())
                    .select_from(log_lines)
                    .where(
                        log_lines.c.execution_id == execution.scalar_subquery(),
                        log_lines.c.task_run_id == task_run_id,
                    )
                ).scalar_one()
            )

    # -- logs ------------------------------------------------------------------------

    def append_logs(self, lines: Sequence[NewLogLine]) -> None:
        """Store log lines in one transaction, in their order (see `log_insert`)."""
        self.append_log_batches(
            [
                NewLogBatch(
                    ln.execution_id, ln.task_run_id, ln.task_id, ln.stream, ln.time, (ln.line,)
                )
                for ln in lines
            ]
        )

    def append_log_batches(self, batches: Sequence[NewLogBatch]) -> None:
        """Store the lines of `batches` in one transaction, in their order (`log_insert`)."""
        count = sum(len(batch.lines) for batch in batches)
        if not count:
            return
        with self._writing(f"store {count} log lines") as conn:
            insert_log_batches(conn, batches, self._sqlite_log_insert)

    def get_logs(
        self,
        execution_id: str,
        *,
        task_id: str | None = None,
        after: int | None = None,
        limit: int | None = None,
        tail: int | None = None,
    ) -> list[LogRecord]:
        """The log lines of an execution (or of one of its tasks) in the order stored,
        after line id `after`, at most `limit`, or only the last `tail` of them (read
        through the (execution_id, id) index, from its end for a tail)."""
        if limit is not None and tail is not None:
            raise UsageError("ask for a limit or a tail of log lines, not both")
        query = select(
            log_lines.c.id,
            log_lines.c.task_run_id,
            log_lines.c.task_id,
            log_lines.c.time,
            log_lines.c.stream,
            log_lines.c.line,
        ).where(log_lines.c.execution_id == execution_id)
        if task_id is not None:
            query = query.where(log_lines.c.task_id == task_id)
        if after is not None:
            query = query.where(log_lines.c.id > check_row_id(after))
        if tail is not None:
            query = query.order_by(log_lines.c.id.desc()).limit(check_log_limit(tail))
        else:
            query = query.order_by(log_lines.c.id)
            if limit is not None:
                query = query.limit(check_log_limit(limit))
        with self._reading(f"read the logs of execution '{execution_id}'") as conn:
            rows = conn.execute(query).all()
        if tail is not None:
            rows = rows[::-1]
        # The query's columns are the record's fields, in order.
        return [LogRecord._make(row) for row in rows]

    def count_logs(self, execution_id: str) -> int:
        """How many log lines an execution has."""
        query = (
            select(func.count())
            .select_from(log_lines)
            .where(log_lines.c.execution_id == execution_id)
        )
        with self._reading(f"count the logs of execution '{execution_id}'") as conn:
            return int(conn.execute(query).scalar_one())

    # -- artifacts -------------------------------------------------------------------

    def record_artifacts(
        self,
        *,
        execution_id: str,
        task_run_id: int,
        task_id: str,
        artifacts: Sequence[ArtifactFile],
    ) -> None:
        """Record the files a task run copied out, in one transaction, replacing what was
        recorded for that task run before (so a retried call stores each file once).

        Stored in path order. A task run that does not exist is a StoreError.
        """
        rows = [
            {
                "execution_id": execution_id,
                "task_run_id": task_run_id,
                "task_id": task_id,
                "path": artifact.path,
                "size": artifact.size,
                "sha256": artifact.sha256,
                "local_path": str(artifact.local_path),
            }
            for artifact in sorted(artifacts, key=lambda artifact: artifact.path)
        ]

        def replace_rows() -> None:
            now = _utcnow()
            action = f"record {len(rows)} artifacts of task '{task_id}'"
            with self._writing(action) as conn:
                conn.execute(
                    delete(artifacts_table).where(artifacts_table.c.task_run_id == task_run_id)
                )
                if rows:
                    conn.execute(
                        insert(artifacts_table), [{**row, "created_at": now} for row in rows]
                    )

        self._retrying(replace_rows)

    def list_artifacts(
        self, execution_id: str, *, task_id: str | None = None
    ) -> list[ArtifactRecord]:
        """The artifacts of an execution (or of one of its tasks), task run by task run
        in the order they were recorded, each run's files in path order."""
        query = select(artifacts_table).where(artifacts_table.c.execution_id == execution_id)
        if task_id is not None:
            query = query.where(artifacts_table.c.task_id == task_id)
        with self._reading(f"read the artifacts of execution '{execution_id}'") as conn:
            rows = conn.execute(query.order_by(artifacts_table.c.id)).all()
        return [_artifact_record(r) for r in rows]

    def get_artifact(self, artifact_id: int) -> ArtifactRecord:
        """One artifact by its id; NotFoundError if there is none."""
        with self._reading(f"read artifact {artifact_id}") as conn:
            row = conn.execute(
                select(artifacts_table).where(artifacts_table.c.id == check_row_id(artifact_id))
            ).one_or_none()
        if row is None:
            raise NotFoundError(f"no artifact has id {artifact_id}")
        return _artifact_record(row)

    # -- the server: health, tokens, flows, triggers, pauses ----------------------------

    def ping(self) -> None:
        """Raise a StoreError unless the database answers now."""
        with self._reading("reach the database") as conn:
            conn.execute(select(literal(1))).scalar_one()

    def add_token(self, token: ApiToken) -> None:
        """Keep an API token's digest; ConflictError if a token has that name."""
        with self._writing(f"record token '{token.name}'") as conn:
            added = conn.execute(
                _insert_or_ignore(conn, api_tokens)
                .values(
                    name=token.name,
                    digest=token.digest,
                    shown=token.shown,
                    created_at=token.created_at,
                )
                .on_conflict_do_nothing()
                .returning(api_tokens.c.name)
            ).first()
        if added is None:
            raise ConflictError(
                f"a token named {token.name!r} exists: revoke it first, or choose another name"
            )

    def find_token(self, digest: str) -> ApiToken | None:
        with self._reading("look up a token") as conn:
            row = conn.execute(
                select(api_tokens).where(api_tokens.c.digest == digest)
            ).one_or_none()
        return None if row is None else _token_record(row)

    def list_tokens(self) -> list[ApiToken]:
        with self._reading("list tokens") as conn:
            rows = conn.execute(select(api_tokens).order_by(api_tokens.c.name)).all()
        return [_token_record(row) for row in rows]

    def remove_token(self, name: str) -> bool:
        with self._writing(f"revoke token '{name}'") as conn:
            removed = conn.execute(delete(api_tokens).where(api_tokens.c.name == name)).rowcount
        return bool(removed)

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
        """Keep a revision of a flow file; False if it was kept already."""
        with self._writing(f"record revision {revision} of flow {namespace}.{flow_id}") as conn:
            added = conn.execute(
                _insert_or_ignore(conn, flow_revisions)
                .values(
                    namespace=namespace,
                    flow_id=flow_id,
                    revision=revision,
                    source=source,
                    path=path,
                    loaded_at=at,
                )
                .on_conflict_do_nothing()
                .returning(flow_revisions.c.revision)
            ).first()
        return added is not None

    def flow_states(
        self, *, namespace: str | None = None, flow_id: str | None = None
    ) -> dict[tuple[str, str], FlowState]:
        """Paused flows and trigger states, by (namespace, flow id)."""
        pauses = select(flow_pauses)
        states = select(trigger_states)
        if namespace is not None:
            pauses = pauses.where(flow_pauses.c.namespace == namespace)
            states = states.where(trigger_states.c.namespace == namespace)
        if flow_id is not None:
            pauses = pauses.where(flow_pauses.c.flow_id == flow_id)
            states = states.where(trigger_states.c.flow_id == flow_id)
        with self._reading("read the states of flows") as conn:
            paused = {(r.namespace, r.flow_id): r.paused_at for r in conn.execute(pauses)}
            triggers: dict[tuple[str, str], dict[str, TriggerState]] = {}
            for row in conn.execute(states.order_by(trigger_states.c.trigger_id)):
                found = _trigger_state(row)
                triggers.setdefault((row.namespace, row.flow_id), {})[found.trigger_id] = found
        return {
            key: FlowState(key[0], key[1], paused.get(key), triggers.get(key, {}))
            for key in sorted({*paused, *triggers})
        }

    def set_flow_paused(self, namespace: str, flow_id: str, *, paused: bool, at: datetime) -> None:
        """Pause (keeping the first time) or unpause a flow; unpausing lifts `stop_after`."""
        verb = "pause" if paused else "unpause"
        with self._writing(f"{verb} flow {namespace}.{flow_id}") as conn:
            if paused:
                conn.execute(
                    _insert_or_ignore(conn, flow_pauses)
                    .values(namespace=namespace, flow_id=flow_id, paused_at=at)
                    .on_conflict_do_nothing()
                )
                return
            conn.execute(
                delete(flow_pauses).where(
                    flow_pauses.c.namespace == namespace, flow_pauses.c.flow_id == flow_id
                )
            )
            conn.execute(
                update(trigger_states)
                .where(
                    trigger_states.c.namespace == namespace,
                    trigger_states.c.flow_id == flow_id,
                    trigger_states.c.disabled_at.is_not(None),
                )
                # The execution that stopped it has ended: it must not stop it again.
                .values(disabled_at=None, disabled_reason=None, execution_id=None)
            )

    def init_trigger(self, namespace: str, flow_id: str, trigger_id: str, *, at: datetime) -> None:
        with self._writing(f"record trigger {trigger_id} of flow {namespace}.{flow_id}") as conn:
            conn.execute(
                _insert_or_ignore(conn, trigger_states)
                .values(
                    namespace=namespace,
                    flow_id=flow_id,
                    trigger_id=trigger_id,
                    created_at=at,
                    last_at=at,
                )
                .on_conflict_do_nothing()
            )

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
        """Move a trigger's state forward, never back."""
        values: dict[str, Any] = {}
        if last_at is not None:
            values["last_at"] = _later(trigger_states.c.last_at, last_at)
        if execution_id is not None:
            when = fired_at or _utcnow()
            newer = literal(when, trigger_states.c.fired_at.type)
            kept = or_(trigger_states.c.fired_at.is_(None), trigger_states.c.fired_at <= newer)
            values["execution_id"] = case(
                (kept, literal(execution_id, trigger_states.c.execution_id.type)),
                else_=trigger_states.c.execution_id,
            )
            values["fired_at"] = case((kept, newer), else_=trigger_states.c.fired_at)
        if not values:
            return
        key = (
            trigger_states.c.namespace == namespace,
            trigger_states.c.flow_id == flow_id,
            trigger_states.c.trigger_id == trigger_id,
        )
        with self._writing(f"move trigger {trigger_id} of flow {namespace}.{flow_id}") as conn:
            conn.execute(
                _insert_or_ignore(conn, trigger_states)
                .values(
                    namespace=namespace,
                    flow_id=flow_id,
                    trigger_id=trigger_id,
                    created_at=fired_at or last_at or _utcnow(),
                )
                .on_conflict_do_nothing()
            )
            conn.execute(update(trigger_states).where(*key).values(**values))

    def disable_trigger(
        self, namespace: str, flow_id: str, trigger_id: str, *, reason: str, at: datetime
    ) -> None:
        with self._writing(f"disable trigger {trigger_id} of flow {namespace}.{flow_id}") as conn:
            conn.execute(
                update(trigger_states)
                .where(
                    trigger_states.c.namespace == namespace,
                    trigger_states.c.flow_id == flow_id,
                    trigger_states.c.trigger_id == trigger_id,
                )
                .values(disabled_at=at, disabled_reason=clean_text(reason))
            )

    def fired_times(
        self, namespace: str, flow_id: str, trigger_id: str, *, start: datetime, end: datetime
    ) -> dict[datetime, str]:
        """Scheduled times of the trigger fired in [start, end), with their executions."""
        query = select(trigger_fires.c.scheduled_at, trigger_fires.c.execution_id).where(
            trigger_fires.c.namespace == namespace,
            trigger_fires.c.flow_id == flow_id,
            trigger_fires.c.trigger_id == trigger_id,
            trigger_fires.c.scheduled_at >= start,
            trigger_fires.c.scheduled_at < end,
        )
        with self._reading(f"read the times trigger {trigger_id} fired") as conn:
            rows = conn.execute(query).all()
        return {row.scheduled_at: str(row.execution_id) for row in rows}

    def ended_executions(
        self, namespace: str, flow_id: str, *, since: datetime, limit: int = 1000
    ) -> list[ExecutionRecord]:
        """The flow's executions that ended at or after `since`, in the order they ended."""
        query = (
            select(executions)
            .where(
                executions.c.namespace == namespace,
                executions.c.flow_id == flow_id,
                executions.c.ended_at >= since,
            )
            .order_by(executions.c.ended_at, executions.c.id)
            .limit(check_limit(limit))
        )
        with self._reading(f"read the ended executions of {namespace}.{flow_id}") as conn:
            rows = conn.execute(query).all()
            runs = self._task_runs_of(conn, [r.id for r in rows])
        return [_execution_record(r, runs.get(r.id, ())) for r in rows]

    def pause_task_run(self, task_run_id: int, *, started_at: datetime) -> None:
        self._update_task_run(
            task_run_id,
            "mark task run {id} paused",
            state=TaskState.PAUSED.value,
            started_at=started_at,
        )

    def take_paused(self, execution_id: str, owner: LeaseOwner) -> bool:
        """PAUSED -> CREATED, leased by `owner`, if it still is PAUSED (compare-and-set)."""
        with self._writing(f"take paused execution '{execution_id}'") as conn:
            taken = conn.execute(
                update(executions)
                .where(
                    executions.c.id == execution_id,
                    executions.c.state == ExecutionState.PAUSED.value,
                )
                .values(
                    state=ExecutionState.CREATED.value,
                    error=None,
                    ended_at=None,
                    kill_requested_at=None,
                    heartbeat_at=self._db_now(),
                    **_owner_values(owner),
                )
            ).rowcount
        return taken == 1

    def heartbeat_many(self, token: str, execution_ids: Sequence[str]) -> dict[str, Beat]:
        """Renew the leases held with `token` of these executions, 500 ids a statement."""
        ids = list(dict.fromkeys(execution_ids))
        beats = dict.fromkeys(ids, Beat.LOST)
        with self._writing(f"renew the leases of {len(ids)} executions") as conn:
            for start in range(0, len(ids), 500):
                rows = conn.execute(
                    update(executions)
                    .where(
                        executions.c.lease_token == token,
                        executions.c.id.in_(ids[start : start + 500]),
                    )
                    .values(heartbeat_at=self._db_now())
                    .returning(executions.c.id, executions.c.kill_requested_at)
                ).all()
                for row in rows:
                    beats[row.id] = Beat.KILL if row.kill_requested_at is not None else Beat.KEPT
        return beats


# -- rows to records ------------------------------------------------------------------------------


def _token_record(row: Any) -> ApiToken:
    return ApiToken(name=row.name, digest=row.digest, shown=row.shown, created_at=row.created_at)


def _trigger_state(row: Any) -> TriggerState:
    return TriggerState(
        namespace=row.namespace,
        flow_id=row.flow_id,
        trigger_id=row.trigger_id,
        created_at=row.created_at,
        last_at=row.last_at,
        execution_id=row.execution_id,
        fired_at=row.fired_at,
        disabled_at=row.disabled_at,
        disabled_reason=row.disabled_reason,
    )


def _insert_or_ignore(conn: Connection, table: Table) -> Any:
    """An INSERT that can say ON CONFLICT DO NOTHING, in this connection's dialect."""
    return pg_insert(table) if conn.dialect.name == "postgresql" else sqlite_insert(table)


def _later(column: Any, value: datetime) -> Any:
    """`column` moved to `value` if that is later (or the column is empty): two writers
    never move it back. Compared in SQL, so the row's latest value counts."""
    new = literal(value, column.type)
    return case((or_(column.is_(None), column < new), new), else_=column)


_HEX = frozenset("0123456789abcdef")


def _id_prefix_conditions(prefix: str) -> list[ColumnElement[bool]]:
    """The executions whose id starts with `prefix`, matched literally.

    LIKE 'abcd%' reads every execution: SQLite's LIKE ignores case, so it cannot use the
    primary key's index, and neither can Postgres's unless the column's collation is
    "C". Ids are 32 lowercase hex digits (uuid4().hex), so a hex prefix also bounds a
    range of the primary key, which both read through the index; LIKE stays, so the
    rows found are exactly those it finds."""
    conditions: list[ColumnElement[bool]] = []
    if len(prefix) <= 32 and _HEX.issuperset(prefix):
        conditions += [
            executions.c.id >= prefix.ljust(32, "0"),
            executions.c.id <= prefix.ljust(32, "f"),
        ]
    conditions.append(executions.c.id.startswith(prefix, autoescape=True))
    return conditions


def _filter_conditions(where: ExecutionFilter) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = []
    if where.namespace is not None:
        conditions.append(executions.c.namespace == where.namespace)
    if where.flow_id is not None:
        conditions.append(executions.c.flow_id == where.flow_id)
    states = where.state_names()
    if states:
        conditions.append(executions.c.state.in_(states))
    for key, value in where.labels.items():
        # json_extract on SQLite, ->> on Postgres: the label's value as text
        conditions.append(executions.c.labels[key].as_string() == value)
    if where.created_after is not None:
        conditions.append(executions.c.created_at >= where.created_after)
    if where.created_before is not None:
        conditions.append(executions.c.created_at < where.created_before)
    return conditions


def _owner_values(owner: LeaseOwner) -> dict[str, Any]:
    return {
        "owner_host": owner.host,
        "owner_pid": owner.pid,
        "owner_boot_id": owner.boot_id,
        "lease_token": owner.token,
    }


def _execution_record(row: Any, runs: tuple[TaskRunRecord, ...]) -> ExecutionRecord:
    return ExecutionRecord(
        id=row.id,
        flow_id=row.flow_id,
        namespace=row.namespace,
        revision=row.revision,
        inputs=row.inputs or {},
        labels=row.labels or {},
        state=ExecutionState(row.state),
        error=row.error,
        created_at=row.created_at,
        started_at=row.started_at,
        ended_at=row.ended_at,
        task_runs=runs,
        trigger=row.trigger,
    )


def _task_run_record(row: Any) -> TaskRunRecord:
    return TaskRunRecord(
        id=row.id,
        execution_id=row.execution_id,
        task_id=row.task_id,
        attempt=row.attempt,
        state=TaskState(row.state),
        exit_code=row.exit_code,
        image=row.image,
        container_id=row.container_id,
        node=row.node,
        error=row.error,
        outputs=row.outputs,
        created_at=row.created_at,
        started_at=row.started_at,
        ended_at=row.ended_at,
    )


def _artifact_record(row: Any) -> ArtifactRecord:
    return ArtifactRecord(
        id=row.id,
        execution_id=row.execution_id,
        task_run_id=row.task_run_id,
        task_id=row.task_id,
        path=row.path,
        size=row.size,
        sha256=row.sha256,
        local_path=row.local_path,
        created_at=row.created_at,
    )


if TYPE_CHECKING:
    _: type[Store] = SqlStore  # mypy checks that SqlStore keeps the whole contract
