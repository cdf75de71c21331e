"""The store: every execution, task attempt and log line, in SQLite or PostgreSQL.

All database I/O of runner goes through `Store`; its methods say what they record
(`create_execution`, `task_run_started`, `append_logs`, ...) and each write is one short
transaction. SQLAlchemy and driver errors are translated here into `StoreError` (or
`NotFoundError` for an id that matches nothing), with one line naming what failed.

SQLite is set up for many writers: WAL journal, a 30 s busy timeout, and writes that
start with `BEGIN IMMEDIATE` so that a second writer (a thread or another process) waits
for the lock instead of failing half way through its transaction.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import (
    URL,
    Connection,
    Engine,
    create_engine,
    event,
    func,
    insert,
    literal,
    make_url,
    select,
    update,
)
from sqlalchemy import exc as sa_exc
from sqlalchemy.pool import ConnectionPoolEntry, StaticPool

from runner.errors import NotFoundError, StoreError
from runner.execution import ExecutionState, TaskState
from runner.settings import DATABASE_URL_ENV
from runner.store.models import executions, log_lines, task_runs

MIGRATIONS = Path(__file__).parent / "migrations"
DEFAULT_SQLITE_PATH = Path(".runner") / "runner.db"
MIN_PREFIX = 4
"""Shortest id prefix `get_execution` looks up (shorter ones must match a whole id)."""

_SQLITE_BUSY_TIMEOUT_S = 30
_PG_CONNECT_TIMEOUT_S = 10
_PG_MIGRATION_LOCK = 0x72756E6E6572  # "runner": serialises migrations of one database
_WRITE = "runner_write"  # execution option: this transaction writes (BEGIN IMMEDIATE)


def default_database_url() -> str:
    """`RUNNER_DATABASE_URL`, else SQLite in `.runner/runner.db` under the current folder."""
    url = os.environ.get(DATABASE_URL_ENV, "").strip()
    if url:
        return url
    return "sqlite:///" + str(DEFAULT_SQLITE_PATH.absolute())


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _seconds_between(start: datetime | None, end: datetime | None) -> float | None:
    if start is None or end is None:
        return None
    return (end - start).total_seconds()


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


# -- records -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NewLogLine:
    """A log line on its way into the store (see `Store.append_logs` and `LogWriter`)."""

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


# -- errors --------------------------------------------------------------------------------

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
    """`postgresql database 'runner' at 127.0.0.1:5432` or `sqlite database '/x/runner.db'`."""
    dialect = url.get_backend_name()
    if dialect == "sqlite":
        return f"sqlite database '{url.database or ':memory:'}'"
    name = f" '{url.database}'" if url.database else ""
    where = url.host or "localhost"
    port = url.port or _DEFAULT_PORTS.get(dialect)
    if port is not None:
        where += f":{port}"
    return f"{dialect} database{name} at {where}"


def _mask_password(raw_url: str) -> str:
    return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", raw_url)


# -- the store -----------------------------------------------------------------------------


class Store:
    """Where runner records what it does. Open with `Store.open(url)`; close when done.

    Safe to share between threads: each call takes its own pooled connection.
    """

    def __init__(self, engine: Engine) -> None:
        """Wrap an engine whose database is already migrated; use `Store.open` instead."""
        self._engine = engine
        self._writer = engine.execution_options(**{_WRITE: True})
        self._description = _describe(engine.url)
        # An in-memory SQLite database lives in one connection shared by all threads,
        # so its calls take turns.
        self._serial: AbstractContextManager[Any] = (
            threading.RLock() if isinstance(engine.pool, StaticPool) else nullcontext()
        )

    # -- opening and closing ---------------------------------------------------------

    @classmethod
    def open(cls, url: str) -> Store:
        """Connect to `url`, bring its tables up to date (Alembic `upgrade head`) and
        return the store. Any failure is a `StoreError` naming the database."""
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
            try:
                _migrate(engine, where)
            except (sa_exc.SQLAlchemyError, CommandError) as exc:
                raise StoreError(
                    f"cannot create or upgrade the tables of {where}: {_reason(exc)}"
                ) from exc
        except BaseException:
            engine.dispose()
            raise
        return cls(engine)

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

    def __repr__(self) -> str:
        return f"Store({self.url!r})"

    # -- transactions ----------------------------------------------------------------

    @contextmanager
    def _writing(self, action: str) -> Iterator[Connection]:
        """One write transaction; errors become a StoreError saying what was being done."""
        with self._serial:
            try:
                with self._writer.begin() as conn:
                    yield conn
            except sa_exc.SQLAlchemyError as exc:
                raise StoreError(f"cannot {action} in {self._description}: {_reason(exc)}") from exc

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
    ) -> None:
        """Record a new execution in state CREATED; `execution_id` is a uuid4 hex."""
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
                )
            )

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
        self,
        *,
        flow_id: str | None = None,
        state: str | None = None,
        limit: int = 20,
    ) -> list[ExecutionRecord]:
        """The newest `limit` executions (optionally of one flow / in one state), newest
        first, each with its task runs."""
        query = select(executions)
        if flow_id is not None:
            query = query.where(executions.c.flow_id == flow_id)
        if state is not None:
            query = query.where(executions.c.state == str(state).upper())
        query = query.order_by(executions.c.created_at.desc(), executions.c.id.desc()).limit(limit)
        with self._reading("list executions") as conn:
            rows = conn.execute(query).all()
            runs = self._task_runs_of(conn, [r.id for r in rows])
        return [_execution_record(r, runs.get(r.id, ())) for r in rows]

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

    # -- task runs -------------------------------------------------------------------

    def create_task_run(
        self, *, execution_id: str, task_id: str, attempt: int, image: str | None
    ) -> int:
        """Record a new attempt of a task in state CREATED; returns its id."""
        with self._writing(f"record attempt {attempt} of task '{task_id}'") as conn:
            result = conn.execute(
                insert(task_runs).values(
                    execution_id=execution_id,
                    task_id=task_id,
                    attempt=attempt,
                    state=TaskState.CREATED.value,
                    image=image,
                    created_at=_utcnow(),
                )
            )
            key = result.inserted_primary_key
        assert key is not None
        return int(key[0])

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
    ) -> None:
        """Record how a task run ended (`ended_at` defaults to now)."""
        self._update_task_run(
            task_run_id,
            "record the end of task run {id}",
            state=state.value,
            exit_code=exit_code,
            error=error,
            ended_at=ended_at or _utcnow(),
            outputs=None if outputs is None else dict(outputs),
        )

    def record_skipped(self, *, execution_id: str, task_id: str, reason: str) -> int:
        """Record a task that will not run (attempt 1, state SKIPPED, `reason` as its
        error); returns the task run's id."""
        now = _utcnow()
        with self._writing(f"record task '{task_id}' as skipped") as conn:
            result = conn.execute(
                insert(task_runs).values(
                    execution_id=execution_id,
                    task_id=task_id,
                    attempt=1,
                    state=TaskState.SKIPPED.value,
                    error=reason,
                    created_at=now,
                    ended_at=now,
                )
            )
            key = result.inserted_primary_key
        assert key is not None
        return int(key[0])

    def _update_task_run(self, task_run_id: int, action: str, **values: Any) -> None:
        with self._writing(action.format(id=task_run_id)) as conn:
            result = conn.execute(
                update(task_runs).where(task_runs.c.id == task_run_id).values(**values)
            )
            found = result.rowcount
        if found == 0:
            raise NotFoundError(f"no task run has id {task_run_id}")

    # -- logs ------------------------------------------------------------------------

    def append_logs(self, lines: Sequence[NewLogLine]) -> None:
        """Store log lines in one transaction (one multi-row insert), in the given order."""
        if not lines:
            return
        rows = [
            {
                "execution_id": ln.execution_id,
                "task_run_id": ln.task_run_id,
                "task_id": ln.task_id,
                "time": ln.time,
                "stream": ln.stream,
                "line": ln.line,
            }
            for ln in lines
        ]
        with self._writing(f"store {len(rows)} log lines") as conn:
            conn.execute(insert(log_lines), rows)

    def get_logs(self, execution_id: str, *, task_id: str | None = None) -> list[LogRecord]:
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
        with self._reading(f"read the logs of execution '{execution_id}'") as conn:
            rows = conn.execute(query.order_by(log_lines.c.id)).all()
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
    )


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
