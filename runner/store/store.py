"""The store: every execution, task attempt and log line, in SQLite or PostgreSQL.

All database I/O of runner goes through `Store`; its methods say what they record
(`create_execution`, `task_run_started`, `append_logs`, ...) and each write is one short
transaction. SQLAlchemy and driver errors are translated here into `StoreError` (or
`NotFoundError` for an id that matches nothing), with one line naming what failed.

SQLite is set up for many writers: WAL journal, a 30 s busy timeout, and writes that
start with `BEGIN IMMEDIATE` so that a second writer (a thread or another process) waits
for the lock instead of failing half way through its transaction.

A database outage does not end a run at once. A write that fails on a connection-level
error (the connection dropped, the server is restarting or refuses connections, SQLite
stayed locked) is tried again after 0.2 s, then 0.4 s, ... up to 5 s between tries, on a
fresh connection (`pool_pre_ping` drops the dead ones). One outage clock serves the whole
store: it starts at the first such failure and stops at the next write that succeeds. Once
it passes the limit (`RUNNER_DB_RETRY_SECONDS`, default 60 s) every failing write raises
`StoreUnavailableError` at once, so all the run's threads give up together. Log lines are
retried by the `LogWriter`, which keeps them buffered meanwhile.

Retrying is safe because every write is one transaction and is idempotent when tried
again: updates set the same values, and before retrying an insert the store looks for the
row by its natural key (execution id; execution, task and attempt) in case the first try
committed and only its reply was lost. A batch of log lines has no such key: in that one
corner (the COMMIT reached the server, the connection dropped before its reply) the batch
is stored twice. SQLAlchemy cannot tell that case apart from a failed commit.
"""

from __future__ import annotations

import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from functools import wraps
from pathlib import Path
from typing import Any, Concatenate, NamedTuple, ParamSpec, Protocol, TypeVar

import structlog
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import (
    URL,
    Connection,
    Dialect,
    Engine,
    create_engine,
    delete,
    event,
    func,
    insert,
    literal,
    make_url,
    select,
    update,
)
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.pool import ConnectionPoolEntry, StaticPool

from runner.errors import NotFoundError, StoreError, UsageError
from runner.execution import ExecutionState, TaskState
from runner.lease import Beat, Lease, Owner
from runner.settings import (
    DB_RETRY_FIRST_S,
    DB_RETRY_MAX_S,
    DB_RETRY_SECONDS_ENV,
    DEFAULT_DB_RETRY_SECONDS,
    db_retry_seconds,
)
from runner.store.models import artifacts as artifacts_table
from runner.store.models import executions, flow_locks, log_lines, task_runs

MIGRATIONS = Path(__file__).parent / "migrations"
MIN_PREFIX = 4
"""Shortest id prefix `get_execution` looks up (shorter ones must match a whole id)."""

_SQLITE_BUSY_TIMEOUT_S = 30
_PG_CONNECT_TIMEOUT_S = 10
_PG_MIGRATION_LOCK = 0x72756E6E6572  # "runner": serialises migrations of one database
# An execution in one of these states has (or should have) a process running it.
_ACTIVE_STATES = (
    ExecutionState.CREATED.value,
    ExecutionState.QUEUED.value,
    ExecutionState.RUNNING.value,
)
_WRITE = "runner_write"  # execution option: this transaction writes (BEGIN IMMEDIATE)

P = ParamSpec("P")
T = TypeVar("T")

log = structlog.get_logger(__name__)


class StoreUnavailableError(StoreError):
    """The database stayed unreachable for the whole retry limit: writing is given up."""


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _seconds_between(start: datetime | None, end: datetime | None) -> float | None:
    if start is None or end is None:
        return None
    return (end - start).total_seconds()


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


# -- records -------------------------------------------------------------------------------


class NewLogLine(NamedTuple):
    """A log line on its way into the store (see `Store.append_logs` and `LogWriter`).

    A NamedTuple rather than a frozen dataclass: one is made per line of task output, and
    a frozen dataclass's __init__ costs three times as much (1.8 us against 0.6 us).
    """

    execution_id: str
    task_run_id: int
    task_id: str
    stream: str
    line: str
    time: datetime


@dataclass(frozen=True)
class TaskRunRecord:
    """One attempt of one task, as stored."""

    id: int
    execution_id: str
    task_id: str
    attempt: int
    state: TaskState
    exit_code: int | None
    image: str | None
    container_id: str | None
    error: str | None
    outputs: Mapping[str, Any] | None
    created_at: datetime
    started_at: datetime | None
    ended_at: datetime | None
    node: str | None = None  # the machine it ran on (a Swarm node); None on one engine

    @property
    def duration_s(self) -> float | None:
        """Seconds from start to end; None until the attempt has both."""
        return _seconds_between(self.started_at, self.ended_at)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: times as ISO 8601 strings, the state as its name."""
        data = asdict(self)
        data.update(
            state=self.state.value,
            outputs=None if self.outputs is None else dict(self.outputs),
            created_at=_iso(self.created_at),
            started_at=_iso(self.started_at),
            ended_at=_iso(self.ended_at),
            duration_s=self.duration_s,
        )
        return data


@dataclass(frozen=True)
class ExecutionRecord:
    """One execution of a flow with all its task runs (in the order they were created)."""

    id: str
    flow_id: str
    namespace: str
    revision: str
    inputs: Mapping[str, Any]
    labels: Mapping[str, Any]
    state: ExecutionState
    error: str | None
    created_at: datetime
    started_at: datetime | None
    ended_at: datetime | None
    task_runs: tuple[TaskRunRecord, ...] = ()

    @property
    def duration_s(self) -> float | None:
        """Seconds from start to end; None until the execution has both."""
        return _seconds_between(self.started_at, self.ended_at)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: times as ISO 8601 strings, states as their names."""
        return {
            "id": self.id,
            "flow_id": self.flow_id,
            "namespace": self.namespace,
            "revision": self.revision,
            "inputs": dict(self.inputs),
            "labels": dict(self.labels),
            "state": self.state.value,
            "error": self.error,
            "created_at": _iso(self.created_at),
            "started_at": _iso(self.started_at),
            "ended_at": _iso(self.ended_at),
            "duration_s": self.duration_s,
            "task_runs": [run.to_dict() for run in self.task_runs],
        }


@dataclass(frozen=True, slots=True)
class LogRecord:
    """One stored log line."""

    id: int
    task_run_id: int
    task_id: str
    time: datetime
    stream: str
    line: str


class ArtifactFile(Protocol):
    """What `Store.record_artifacts` needs of each file (`runner.archives.Artifact` is one)."""

    @property
    def path(self) -> str: ...
    @property
    def size(self) -> int: ...
    @property
    def sha256(self) -> str: ...
    @property
    def local_path(self) -> Path | str: ...


@dataclass(frozen=True)
class ArtifactRecord:
    """One stored artifact: a file a task run copied out of the workspace.

    `path` is where it was, relative to /workspace; `local_path` where the copy was
    written (on the machine that ran the task, which may not be this one).
    """

    id: int
    execution_id: str
    task_run_id: int
    task_id: str
    path: str
    size: int
    sha256: str
    local_path: str
    created_at: datetime

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the time as an ISO 8601 string."""
        data = asdict(self)
        data["created_at"] = _iso(self.created_at)
        return data


@dataclass(frozen=True)
class SchemaRevision:
    """Where a database's schema stands: its Alembic revision and the newest one this
    runner ships (`head`). `current` is None for a database without runner's tables."""

    current: str | None
    head: str
    known: bool  # False: a revision of a newer runner

    @property
    def is_head(self) -> bool:
        return self.current == self.head


# -- errors --------------------------------------------------------------------------------


def _is_transient(exc: BaseException | None) -> bool:
    """Whether a failed write may succeed on a new try: the connection dropped or could not
    be made, the server is shutting down or starting up, a deadlock or serialization
    failure rolled the transaction back, or SQLite stayed locked past its busy timeout.
    Constraint violations, bad SQL and the like are not: they would fail again."""
    if isinstance(exc, sa_exc.DisconnectionError | sa_exc.TimeoutError):
        return True  # a pool checkout that could not reconnect, or no free connection
    if not isinstance(exc, sa_exc.DBAPIError):
        return False
    if exc.connection_invalidated:  # the dialect recognised a disconnect
        return True
    if not isinstance(exc, sa_exc.OperationalError):
        return False
    if isinstance(exc.orig, sqlite3.Error):
        # Most SQLite OperationalErrors ("no such table", "unable to open") are for good.
        text = str(exc.orig).lower()
        return "locked" in text or "busy" in text
    # psycopg's OperationalError: refused or dropped connections, admin/crash shutdown,
    # "the database system is starting up", deadlocks and serialization failures.
    return True


def _retried(method: Callable[Concatenate[Store, P], T]) -> Callable[Concatenate[Store, P], T]:
    """Retry a write method of Store on connection-level errors (see `Store._retrying`).
    Only for writes that are idempotent when tried again (updates)."""

    @wraps(method)
    def retried(self: Store, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return self._retrying(lambda: method(self, *args, **kwargs))

    return retried


_PG_SERVER_PREFIX = re.compile(
    r'^(?:- host: .*?: )?(?:connection failed: )?(?:connection to server at "[^"]*"(?: \([^)]*\))?, port \d+ failed: )?'
)


def _reason(exc: BaseException) -> str:
    """The driver's own words for what went wrong, on one line, without the noise."""
    orig = getattr(exc, "orig", None) or exc
    text = str(orig).strip()
    parts: list[str] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(
            ("Multiple connection attempts failed", "All failures were")
        ):
            continue
        if line.startswith(("[SQL:", "[parameters:", "(Background on this error")):
            break
        line = _PG_SERVER_PREFIX.sub("", line)
        line = re.sub(r"^(?:FATAL|ERROR):\s+", "", line)
        if line.startswith("Is the server running") and parts:
            parts[-1] += f" ({line[0].lower()}{line[1:]})"
            continue
        if line not in parts:
            parts.append(line)
    return "; ".join(parts) or type(orig).__name__


_DEFAULT_PORTS = {"postgresql": 5432, "mysql": 3306, "mariadb": 3306, "mssql": 1433, "oracle": 1521}


def _describe(url: URL) -> str:
    """`postgresql database 'runner' at 127.0.0.1:5432` or `sqlite database '/x/runner.db'`.

    Where libpq connects: `?host=` and `?port=` in the query win over the URL's own host
    and port (SQLAlchemy's psycopg dialect passes them on), may name several hosts (tried
    in turn) and a Unix socket folder.
    """
    dialect = url.get_backend_name()
    if dialect == "sqlite":
        return f"sqlite database '{url.database or ':memory:'}'"
    name = f" '{url.database}'" if url.database else ""
    hosts = _query_list(url, "host") or [url.host or "localhost"]
    ports = _query_list(url, "port") or [str(url.port or _DEFAULT_PORTS.get(dialect) or "")]
    if len(ports) == 1:  # libpq: one port for every host, or one per host
        ports *= len(hosts)
    places = []
    for host, port in zip(hosts, ports + [""] * len(hosts), strict=False):
        host = host or "localhost"
        if host.startswith("/"):
            places.append(f"the socket in {host}" + (f" (port {port})" if port else ""))
        else:
            places.append(f"{host}:{port}" if port else host)
    return f"{dialect} database{name} at {' or '.join(places)}"


def _query_list(url: URL, key: str) -> list[str]:
    """A query parameter of `url` as a list: `host=a,b`, `host=a&host=b`, or none."""
    value = url.query.get(key)
    items = [value] if isinstance(value, str) else list(value or ())
    return [part.strip() for item in items for part in item.split(",")]


def _mask_password(raw_url: str) -> str:
    return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", raw_url)


# -- the store -----------------------------------------------------------------------------


class Store:
    """Where runner records what it does. Open with `Store.open(url)`; close when done.

    Safe to share between threads: each call takes its own pooled connection.
    """

    def __init__(self, engine: Engine, *, retry_seconds: float = DEFAULT_DB_RETRY_SECONDS) -> None:
        """Wrap an engine whose database is already migrated; use `Store.open` instead."""
        self._engine = engine
        self._writer = engine.execution_options(**{_WRITE: True})
        self._description = _describe(engine.url)
        self._sqlite_log_insert = _sqlite_log_insert(engine.dialect)
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
    def open(cls, url: str, *, upgrade: bool = True, retry_seconds: float | None = None) -> Store:
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
                f"invalid database URL '{_mask_password(url)}': {_reason(exc)}"
            ) from exc
        where = _describe(parsed)
        engine = _create_engine(parsed, where)
        try:
            try:
                with engine.connect():
                    pass
            except sa_exc.SQLAlchemyError as exc:
                verb = "open" if parsed.get_backend_name() == "sqlite" else "connect to"
                raise StoreError(f"cannot {verb} {where}: {_reason(exc)}") from exc
            store = cls(engine, retry_seconds=retry_for)
            if upgrade:
                store._upgrade()
        except BaseException:
            engine.dispose()
            raise
        return store

    # -- schema ----------------------------------------------------------------------

    def schema_revision(self) -> SchemaRevision:
        """The database's migration revision and the newest one this runner ships."""
        scripts = ScriptDirectory.from_config(alembic_config())
        head = scripts.get_current_head()
        assert head is not None, "runner ships at least one migration"
        known = {script.revision for script in scripts.walk_revisions()}
        with self._reading("read the schema revision") as conn:
            current = MigrationContext.configure(conn).get_current_revision()
        return SchemaRevision(current=current, head=head, known=current is None or current in known)

    def upgrade_schema(self) -> SchemaRevision:
        """Run the migrations up to the newest (Alembic `upgrade head`; `open` does this
        unless told not to). Safe while other processes use or upgrade the database."""
        self._upgrade()
        return self.schema_revision()

    def _upgrade(self) -> None:
        with self._serial:
            try:
                _migrate(self._engine, self._description)
            except (sa_exc.SQLAlchemyError, CommandError) as exc:
                raise StoreError(
                    f"cannot create or upgrade the tables of {self._description}: {_reason(exc)}"
                ) from exc

    def close(self) -> None:
        """Close the pooled connections; do not use the store afterwards."""
        self._engine.dispose()

    def __enter__(self) -> Store:
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
        return f"Store({self.url!r})"

    # -- transactions ----------------------------------------------------------------

    @contextmanager
    def _writing(self, action: str) -> Iterator[Connection]:
        """One write transaction; errors become a StoreError saying what was being done.

        A connection-level error starts the outage clock and a commit stops it; an error
        after the clock has passed the retry limit is a StoreUnavailableError.
        """
        with self._serial:
            try:
                with self._writer.begin() as conn:
                    yield conn
            except sa_exc.SQLAlchemyError as exc:
                message = f"cannot {action} in {self._description}: {_reason(exc)}"
                if _is_transient(exc) and self._outage_left() <= 0:
                    raise StoreUnavailableError(self._given_up(message)) from exc
                raise StoreError(message) from exc
        if self._failing_since is not None:
            self._outage_over()

    def _retrying(
        self, write: Callable[[], T], *, written: Callable[[], T | None] | None = None
    ) -> T:
        """`write()`, tried again on connection-level errors with a growing pause (0.2 s
        doubling to 5 s) until it succeeds or the outage clock passes the retry limit.

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
            except StoreUnavailableError:
                raise
            except StoreError as exc:
                if not _is_transient(exc.__cause__):
                    raise
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
                raise StoreError(f"cannot {action} in {self._description}: {_reason(exc)}") from exc

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
        owner: Owner | None = None,
        flow_path: str | None = None,
    ) -> None:
        """Record a new execution in state CREATED; `execution_id` is a uuid4 hex.

        `owner` is the process that runs it: its lease starts now (see `heartbeat`)."""
        lease: dict[str, Any] = {}
        if owner is not None:
            lease = {
                "owner_host": owner.host,
                "owner_pid": owner.pid,
                "lease_token": owner.token,
                "heartbeat_at": _utcnow(),
            }

        def insert_row() -> str:
            with self._writing(f"record execution '{execution_id}'") as conn:
                conn.execute(
                    insert(executions).values(
                        id=execution_id,
                        flow_id=flow_id,
                        namespace=namespace,
                        revision=revision,
                        source=source,
                        inputs=dict(inputs),
                        labels=dict(labels),
                        state=ExecutionState.CREATED.value,
                        created_at=_utcnow(),
                        flow_path=flow_path,
                        **lease,
                    )
                )
            return execution_id

        def recorded() -> str | None:
            query = select(executions.c.id).where(executions.c.id == execution_id)
            with self._reading(f"look up execution '{execution_id}'") as conn:
                found = conn.execute(query).scalar_one_or_none()
            return None if found is None else str(found)

        self._retrying(insert_row, written=recorded)

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
            "error": error,
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
                    .where(executions.c.id.startswith(wanted, autoescape=True))
                    .order_by(executions.c.created_at.desc(), executions.c.id.desc())
                    .limit(11)
                ).all()
                if len(rows) > 1:
                    shown = ", ".join(r.id for r in rows[:10])
                    more = ", ..." if len(rows) > 10 else ""
                    raise NotFoundError(
                        f"execution id '{wanted}' is ambiguous: it matches {shown}{more}"
                    )
                row = rows[0] if rows else None
            if row is None:
                hint = (
                    f" (give at least {MIN_PREFIX} characters of the id)"
                    if len(wanted) < MIN_PREFIX
                    else ""
                )
                raise NotFoundError(f"no execution matches '{wanted}'{hint}")
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

    def list_executions(
        self, wanted: Any = None, *, after: str | None = None, limit: int = 20
    ) -> Any:
        """TEMPORARY (replaced by the store split): newest first, filtered in SQL by flow
        and state, the rest in Python; no cursor."""
        from runner.store import Page

        query = select(executions)
        if wanted is not None and wanted.flow_id is not None:
            query = query.where(executions.c.flow_id == wanted.flow_id)
        if wanted is not None and wanted.states:
            query = query.where(executions.c.state.in_(list(wanted.states)))
        query = query.order_by(executions.c.created_at.desc(), executions.c.id.desc()).limit(limit)
        with self._reading("list executions") as conn:
            rows = conn.execute(query).all()
            runs = self._task_runs_of(conn, [r.id for r in rows])
        return Page([_execution_record(r, runs.get(r.id, ())) for r in rows], None)

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

    # -- leases, kill requests and flow concurrency ------------------------------------

    def heartbeat(self, execution_id: str, token: str) -> Beat:
        """Renew the lease held with `token`; say whether a kill was requested meanwhile
        or the lease was taken over by another process."""
        with self._writing(f"renew the lease of execution '{execution_id}'") as conn:
            row = conn.execute(
                update(executions)
                .where(executions.c.id == execution_id, executions.c.lease_token == token)
                .values(heartbeat_at=_utcnow())
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

    def active_leases(self, execution_id: str | None = None) -> list[Lease]:
        """Every execution not in a final state (or just `execution_id`'s), with its lease."""
        query = select(
            executions.c.id,
            executions.c.state,
            executions.c.owner_host,
            executions.c.owner_pid,
            executions.c.lease_token,
            executions.c.heartbeat_at,
            executions.c.kill_requested_at,
        ).where(executions.c.state.in_(_ACTIVE_STATES))
        if execution_id is not None:
            query = query.where(executions.c.id == execution_id)
        with self._reading("look for running executions") as conn:
            rows = conn.execute(query.order_by(executions.c.created_at)).all()
        return [
            Lease(
                execution_id=r.id,
                state=r.state,
                owner_host=r.owner_host,
                owner_pid=r.owner_pid,
                token=r.lease_token,
                heartbeat_at=r.heartbeat_at,
                kill_requested=r.kill_requested_at is not None,
            )
            for r in rows
        ]

    def take_lease(self, lease: Lease, owner: Owner) -> bool:
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
                .values(
                    owner_host=owner.host,
                    owner_pid=owner.pid,
                    lease_token=owner.token,
                    heartbeat_at=_utcnow(),
                )
            ).rowcount
        return taken == 1

    def reopen_execution(self, execution_id: str, owner: Owner) -> None:
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
                    owner_host=owner.host,
                    owner_pid=owner.pid,
                    lease_token=owner.token,
                    heartbeat_at=_utcnow(),
                )
            ).rowcount
        if reopened == 0:
            state = self.get_execution(execution_id).state
            raise UsageError(
                f"execution {execution_id} is {state.value}: only a FAILED or KILLED"
                " execution can be restarted"
            )

    def try_start(
        self, execution_id: str, *, namespace: str, flow_id: str, limit: int, lease_s: float
    ) -> list[str]:
        """Move the execution to RUNNING if its flow has fewer than `limit` executions
        running and no queued one ahead of it; return [] then, else the ids of the running
        ones (the execution does not change state).

        Runs in one transaction that first writes the flow's lock row, so the check and
        the move are atomic across processes (a row lock on Postgres; SQLite's writers
        take the database lock up front). Executions whose lease has expired do not count:
        their runner is gone."""
        key = f"{namespace}.{flow_id}"
        fresh = _utcnow() - timedelta(seconds=lease_s)
        same_flow = (executions.c.namespace == namespace, executions.c.flow_id == flow_id)
        with self._writing(f"take a concurrency slot of flow '{key}'") as conn:
            self._lock_flow(conn, key)
            running = list(
                conn.execute(
                    select(executions.c.id)
                    .where(
                        *same_flow,
                        executions.c.state == ExecutionState.RUNNING.value,
                        executions.c.heartbeat_at >= fresh,
                        executions.c.id != execution_id,
                    )
                    .order_by(executions.c.created_at)
                ).scalars()
            )
            me = conn.execute(
                select(executions.c.created_at).where(executions.c.id == execution_id)
            ).scalar_one()
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
        insert_row = (
            pg_insert(flow_locks)
            if conn.dialect.name == "postgresql"
            else sqlite_insert(flow_locks)
        )
        conn.execute(insert_row.values(flow_key=key).on_conflict_do_nothing())
        conn.execute(
            update(flow_locks).where(flow_locks.c.flow_key == key).values(touched_at=_utcnow())
        )

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

    def execution_flow_path(self, execution_id: str) -> str | None:
        with self._reading(f"read execution '{execution_id}'") as conn:
            found = conn.execute(
                select(executions.c.flow_path).where(executions.c.id == execution_id)
            ).scalar_one_or_none()
        return None if found is None else str(found)

    def count_task_run_logs(self, task_run_id: int) -> int:
        """How many lines of this task run are stored (where a recovery resumes)."""
        with self._reading(f"count the log lines of task run {task_run_id}") as conn:
            return int(
                conn.execute(
                    select(func.count())
                    .select_from(log_lines)
                    .where(log_lines.c.task_run_id == task_run_id)
                ).scalar_one()
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
        """Record how a task run ended (`ended_at` defaults to now) and, for a backend of
        several machines, on which `node` it ran (kept as it was when None)."""
        self._update_task_run(
            task_run_id,
            "record the end of task run {id}",
            state=state.value,
            exit_code=exit_code,
            error=error,
            ended_at=ended_at or _utcnow(),
            outputs=None if outputs is None else dict(outputs),
            **({"node": node} if node is not None else {}),
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
            error=reason,
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

    # -- logs ------------------------------------------------------------------------

    def append_logs(self, lines: Sequence[NewLogLine]) -> None:
        """Store log lines in one transaction with one executemany INSERT, in their order."""
        if not lines:
            return
        with self._writing(f"store {len(lines)} log lines") as conn:
            if self._sqlite_log_insert is not None:
                sql, to_time = self._sqlite_log_insert
                values = [
                    value
                    for ln in lines
                    for value in (
                        ln.execution_id,
                        ln.task_run_id,
                        ln.task_id,
                        to_time(ln.time),
                        ln.stream,
                        ln.line,
                    )
                ]
                # Groups of _SQLITE_ROWS_PER_INSERT rows per statement, then the rest one
                # row per statement, so the rows keep their order. sqlite3 lets go of the
                # GIL for every statement it steps: one row each made the thread reading
                # the container's output wait for the GIL thousands of times per batch.
                width = len(_LOG_COLUMNS)
                group = _SQLITE_ROWS_PER_INSERT * width
                whole = len(values) - len(values) % group
                if whole:
                    grouped = sql.replace(
                        _SQLITE_ONE_ROW, ", ".join([_SQLITE_ONE_ROW] * _SQLITE_ROWS_PER_INSERT)
                    )
                    conn.exec_driver_sql(
                        grouped, [tuple(values[i : i + group]) for i in range(0, whole, group)]
                    )
                if whole < len(values):
                    conn.exec_driver_sql(
                        sql,
                        [tuple(values[i : i + width]) for i in range(whole, len(values), width)],
                    )
                return
            if conn.dialect.driver == "psycopg":
                _copy_log_lines(conn, lines)
                return
            conn.execute(
                insert(log_lines),
                [
                    {
                        "execution_id": ln.execution_id,
                        "task_run_id": ln.task_run_id,
                        "task_id": ln.task_id,
                        "time": ln.time,
                        "stream": ln.stream,
                        "line": ln.line,
                    }
                    for ln in lines
                ],
            )

    def get_logs(
        self,
        execution_id: str,
        *,
        task_id: str | None = None,
        after: int | None = None,
        limit: int | None = None,
    ) -> list[LogRecord]:
        """The log lines of an execution (or of one of its tasks) in the order stored."""
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
            query = query.where(log_lines.c.id > after)
        query = query.order_by(log_lines.c.id)
        if limit is not None:
            query = query.limit(limit)
        with self._reading(f"read the logs of execution '{execution_id}'") as conn:
            rows = conn.execute(query).all()
        return [LogRecord(r.id, r.task_run_id, r.task_id, r.time, r.stream, r.line) for r in rows]

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
        return [
            ArtifactRecord(
                id=r.id,
                execution_id=r.execution_id,
                task_run_id=r.task_run_id,
                task_id=r.task_id,
                path=r.path,
                size=r.size,
                sha256=r.sha256,
                local_path=r.local_path,
                created_at=r.created_at,
            )
            for r in rows
        ]


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
        error=row.error,
        outputs=row.outputs,
        created_at=row.created_at,
        started_at=row.started_at,
        ended_at=row.ended_at,
        node=row.node,
    )


_LOG_COLUMNS = ("execution_id", "task_run_id", "task_id", "time", "stream", "line")
_SQLITE_ONE_ROW = "(" + ", ".join(["?"] * len(_LOG_COLUMNS)) + ")"
_SQLITE_ROWS_PER_INSERT = 150  # 900 parameters: under SQLite's oldest limit of 999
_PG_LOG_COPY = f"COPY log_lines ({', '.join(_LOG_COLUMNS)}) FROM STDIN"


def _copy_log_lines(conn: Connection, lines: Sequence[NewLogLine]) -> None:
    """Store log lines with PostgreSQL's COPY through psycopg, in the caller's transaction.

    An executemany INSERT costs about 60 us of wall time and 20 us of CPU per line here
    (parameters bound row by row, statements parsed by the server); COPY streams the rows
    in one command: about 9 us and 3 us. psycopg's errors are raised as SQLAlchemy's, as
    an INSERT's would be, so that the caller's retry and outage handling apply.
    """
    import psycopg  # the driver of this dialect, so installed

    cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    try:
        with cursor.copy(_PG_LOG_COPY) as copy:
            write_row = copy.write_row
            for ln in lines:
                when = ln.time if ln.time.tzinfo is not None else ln.time.replace(tzinfo=UTC)
                write_row((ln.execution_id, ln.task_run_id, ln.task_id, when, ln.stream, ln.line))
    except psycopg.Error as exc:
        invalidated = conn.dialect.is_disconnect(
            exc,  # type: ignore[arg-type]  # psycopg's Error is this dialect's DBAPI Error
            conn.connection.dbapi_connection,
            cursor,
        )
        raise sa_exc.DBAPIError.instance(
            _PG_LOG_COPY,
            None,
            exc,
            psycopg.Error,
            connection_invalidated=invalidated,
            dialect=conn.dialect,
        ) from exc
    finally:
        cursor.close()


def _sqlite_log_insert(dialect: Dialect) -> tuple[str, Callable[[Any], Any]] | None:
    """On SQLite, the log INSERT as SQL text plus the converter of its `time` value.

    SQLAlchemy's executemany builds and converts a parameter dict per row, which costs
    nearly as much as SQLite's own insert; handing sqlite3 plain tuples for the same
    Core-compiled statement gives about 1.5 times the lines per second (the target is
    >100k/s). On Postgres the round trips dominate, so it keeps the ordinary Core path.
    """
    if dialect.name != "sqlite":
        return None
    compiled = insert(log_lines).compile(dialect=dialect, column_keys=list(_LOG_COLUMNS))
    sql = str(compiled)
    if not compiled.positional or tuple(compiled.positiontup or ()) != _LOG_COLUMNS:
        return None  # not the statement this shortcut was written for: use Core
    if "RETURNING" in sql.upper() or not sql.endswith(f"VALUES {_SQLITE_ONE_ROW}"):
        return None
    time_type = log_lines.c.time.type.dialect_impl(dialect)
    to_time = time_type.bind_processor(dialect) or (lambda value: value)
    return sql, to_time


# -- engine and migrations -----------------------------------------------------------------


def _create_engine(url: URL, where: str) -> Engine:
    backend = url.get_backend_name()
    try:
        if backend == "sqlite":
            return _create_sqlite_engine(url, where)
        connect_args: dict[str, Any] = {}
        if backend == "postgresql" and "connect_timeout" not in url.query:
            connect_args["connect_timeout"] = _PG_CONNECT_TIMEOUT_S
        return create_engine(url, pool_pre_ping=True, connect_args=connect_args)
    except sa_exc.NoSuchModuleError as exc:
        raise StoreError(
            f"cannot open {where}: unknown database driver '{url.drivername}'"
        ) from exc
    except ImportError as exc:
        raise StoreError(
            f"cannot open {where}: the driver for '{url.drivername}' is not installed ({exc})"
        ) from exc
    except (sa_exc.ArgumentError, TypeError, ValueError) as exc:
        raise StoreError(f"cannot open {where}: {_reason(exc)}") from exc


def _create_sqlite_engine(url: URL, where: str) -> Engine:
    database = url.database or ""
    in_memory = database in ("", ":memory:") or database.startswith("file::memory:")
    connect_args: dict[str, Any] = {"check_same_thread": False, "timeout": _SQLITE_BUSY_TIMEOUT_S}
    if in_memory:
        engine = create_engine(url, connect_args=connect_args, poolclass=StaticPool)
    else:
        try:
            Path(database).expanduser().absolute().parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot open {where}: cannot create its folder: {exc}") from exc
        engine = create_engine(url, connect_args=connect_args)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, connection_record: ConnectionPoolEntry) -> None:
        # Let SQLAlchemy, not the sqlite3 module, decide when a transaction begins.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {_SQLITE_BUSY_TIMEOUT_S * 1000}")
            cursor.execute("PRAGMA foreign_keys = ON")
            if not in_memory:
                cursor.execute("PRAGMA journal_mode = WAL")
                # With WAL this cannot corrupt the database; it only skips an fsync a commit.
                cursor.execute("PRAGMA synchronous = NORMAL")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        # A writer takes the write lock up front (waiting up to busy_timeout for it), so
        # it never fails on a lock upgrade; readers keep WAL's concurrent snapshots.
        if conn.get_execution_options().get(_WRITE):
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            conn.exec_driver_sql("BEGIN")

    return engine


def alembic_config() -> Config:
    """Alembic's configuration for the store's migrations; no alembic.ini needed."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def _migrate(engine: Engine, where: str) -> None:
    """Upgrade the database to the newest migration, once even with concurrent openers.

    The common case (already up to date) only reads. Otherwise the upgrade runs in one
    write transaction taken under a lock (SQLite's write lock, a Postgres advisory lock),
    so a second process waits and then finds nothing to do. If some database still lets
    two upgrades race, the loser sees "already exists" and simply looks again.
    """
    config = alembic_config()
    scripts = ScriptDirectory.from_config(config)
    head = scripts.get_current_head()
    known = {script.revision for script in scripts.walk_revisions()}
    writer = engine.execution_options(**{_WRITE: True})
    for attempt in (1, 2):
        with engine.connect() as conn:
            current = MigrationContext.configure(conn).get_current_revision()
        if current == head:
            return
        if current is not None and current not in known:
            raise StoreError(
                f"{where} has schema revision '{current}', which this version of runner"
                f" does not know (it knows up to '{head}'): upgrade runner"
            )
        try:
            with writer.begin() as conn:
                if conn.dialect.name == "postgresql":
                    conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_PG_MIGRATION_LOCK})")
                config.attributes["connection"] = conn
                command.upgrade(config, "head")
            return
        except (sa_exc.OperationalError, sa_exc.ProgrammingError, sa_exc.IntegrityError) as exc:
            if attempt == 2 or "already exists" not in str(exc).lower():
                raise
        finally:
            config.attributes.pop("connection", None)
