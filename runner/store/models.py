"""The tables runner keeps: one row an execution, one a task attempt, one a log line, one
a file copied out of the workspace (an artifact); and what a server keeps besides: API
tokens (digests), flow revisions, paused flows, trigger states and trigger firings.

Declared with SQLAlchemy's typed declarative mapping so mypy sees the column types; the
store itself uses the tables through SQLAlchemy Core, which is what the log path needs to
stay fast. The schema is created by the Alembic migrations in `migrations/versions/`, not
by `metadata.create_all`: a change here needs a new migration beside them.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeEngine

# JSONB on Postgres (indexable, compact), plain JSON text elsewhere.
JSONValue = JSON().with_variant(JSONB(), "postgresql")

# SQLite only autoincrements an INTEGER PRIMARY KEY; Postgres gets a real 64-bit key.
BigIntegerKey = BigInteger().with_variant(Integer(), "sqlite")

# Stable constraint names, so later migrations (and Alembic batch mode on SQLite) can
# refer to them by name.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp stored in UTC and always read back timezone-aware (UTC).

    Postgres keeps the zone itself (`timestamptz`). SQLite has no such type: there the
    value is written as ISO text in UTC (`2024-05-01 12:00:00.000000`, the format
    SQLAlchemy's own SQLite DATETIME uses, so the text sorts in time order) and marked UTC
    when read. Doing the conversion here, in one step, keeps log inserts fast. A naive
    datetime is taken to be UTC already (that is what Docker reports).
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(String())
        return dialect.type_descriptor(DateTime(timezone=True))

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        elif value.tzinfo is not UTC:
            value = value.astimezone(UTC)
        if dialect.name == "sqlite":
            # "YYYY-MM-DD HH:MM:SS.ffffff" without the "+00:00" (slicing beats replace()).
            return value.isoformat(" ", "microseconds")[:26]
        return value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        moment: datetime = datetime.fromisoformat(value) if isinstance(value, str) else value
        if moment.tzinfo is UTC:  # Postgres sessions are in UTC (runner.store.engine)
            return moment
        if moment.tzinfo is None:
            return moment.replace(tzinfo=UTC)
        return moment.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {  # noqa: RUF012 - SQLAlchemy reads this class attribute as is
        datetime: UTCDateTime(),
        dict[str, Any]: JSONValue,
    }


class ExecutionRow(Base):
    """One run of a flow. `source` is the flow file's text, kept so it can be restarted."""

    __tablename__ = "executions"
    __table_args__ = (
        Index("ix_executions_flow_id_created_at", "flow_id", "created_at"),
        Index("ix_executions_state", "state"),
        Index("ix_executions_namespace_flow_id_state", "namespace", "flow_id", "state"),
        # Pages of the history, newest first (keyset on created_at, id), also of one
        # namespace or in one state, however few match (a scan of the whole history
        # for a page that does not fill would take as long as the history is big).
        Index("ix_executions_created_at_id", "created_at", "id"),
        Index("ix_executions_namespace_created_at_id", "namespace", "created_at", "id"),
        Index("ix_executions_state_created_at_id", "state", "created_at", "id"),
        # A flow trigger's upstream executions that ended since it last looked.
        Index("ix_executions_namespace_flow_id_ended_at", "namespace", "flow_id", "ended_at"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    flow_id: Mapped[str] = mapped_column(String(255))
    namespace: Mapped[str] = mapped_column(String(255))
    revision: Mapped[str] = mapped_column(String(128))
    source: Mapped[str] = mapped_column(Text)
    inputs: Mapped[dict[str, Any]] = mapped_column(JSONValue)
    labels: Mapped[dict[str, Any]] = mapped_column(JSONValue)
    state: Mapped[str] = mapped_column(String(16))
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # Where the flow file was: a restart reads `files:` and `build:` folders next to it.
    flow_path: Mapped[str | None] = mapped_column(Text)
    # The lease: the process running the execution proves it is alive by moving
    # `heartbeat_at` (always the database's clock); `lease_token` changes hands when
    # another process takes over.
    owner_host: Mapped[str | None] = mapped_column(String(255))
    owner_pid: Mapped[int | None] = mapped_column(Integer)
    # /proc/sys/kernel/random/boot_id of the owner's machine: with the host, it tells
    # whether the owner's pid can be looked up here (same machine, same boot).
    owner_boot_id: Mapped[str | None] = mapped_column(String(36))
    lease_token: Mapped[str | None] = mapped_column(String(32))
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # Set by `runner kill` in any process; the owner sees it at its next heartbeat.
    kill_requested_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # What started it, when a trigger did (`runner.triggers.events.TriggerEvent.to_json`):
    # its templates see it as `trigger.*`, also when it is restarted or resumed.
    trigger: Mapped[dict[str, Any] | None] = mapped_column(JSONValue)


class FlowLockRow(Base):
    """One row per flow, updated to serialise the "is there a free slot?" check of
    flow-level concurrency between processes (a row lock on Postgres, the database write
    lock on SQLite)."""

    __tablename__ = "flow_locks"

    flow_key: Mapped[str] = mapped_column(String(511), primary_key=True)
    touched_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class TaskRunRow(Base):
    """One attempt of one task in an execution (a skipped task gets one row too)."""

    __tablename__ = "task_runs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    execution_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("executions.id", ondelete="CASCADE"), index=True
    )
    task_id: Mapped[str] = mapped_column(String(255))
    attempt: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(16))
    exit_code: Mapped[int | None] = mapped_column(Integer)
    image: Mapped[str | None] = mapped_column(Text)
    container_id: Mapped[str | None] = mapped_column(String(128))
    node: Mapped[str | None] = mapped_column(String(255))  # the Swarm node it ran on
    error: Mapped[str | None] = mapped_column(Text)
    outputs: Mapped[dict[str, Any] | None] = mapped_column(JSONValue)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class LogLineRow(Base):
    """One line a task's container wrote. `task_id` is copied from the task run so a
    `--task` filter needs no join."""

    __tablename__ = "log_lines"
    __table_args__ = (Index("ix_log_lines_execution_id_id", "execution_id", "id"),)

    id: Mapped[int] = mapped_column(BigIntegerKey, primary_key=True, autoincrement=True)
    execution_id: Mapped[str] = mapped_column(String(32))
    task_run_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("task_runs.id", ondelete="CASCADE")
    )
    task_id: Mapped[str] = mapped_column(String(255))
    time: Mapped[datetime] = mapped_column(UTCDateTime())
    stream: Mapped[str] = mapped_column(String(6))
    line: Mapped[str] = mapped_column(Text)


class ArtifactRow(Base):
    """One file a task run copied out of the workspace (`path` is relative to /workspace,
    `local_path` where the copy is). `execution_id` and `task_id` are copied from the task
    run so that listing an execution's artifacts needs no join."""

    __tablename__ = "artifacts"
    __table_args__ = (Index("ix_artifacts_execution_id_task_id", "execution_id", "task_id"),)

    id: Mapped[int] = mapped_column(BigIntegerKey, primary_key=True, autoincrement=True)
    execution_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("executions.id", ondelete="CASCADE")
    )
    task_run_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("task_runs.id", ondelete="CASCADE"), index=True
    )
    task_id: Mapped[str] = mapped_column(String(255))
    path: Mapped[str] = mapped_column(Text)
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    local_path: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class ApiTokenRow(Base):
    """A token of the HTTP API (`runner token create`): only its SHA-256 digest is kept."""

    __tablename__ = "api_tokens"

    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    digest: Mapped[str] = mapped_column(String(64), unique=True)
    shown: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class FlowRevisionRow(Base):
    """Each revision of a flow file a server loaded: its text and where it was."""

    __tablename__ = "flow_revisions"

    namespace: Mapped[str] = mapped_column(String(255), primary_key=True)
    flow_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    revision: Mapped[str] = mapped_column(String(128), primary_key=True)
    source: Mapped[str] = mapped_column(Text)
    path: Mapped[str] = mapped_column(Text)
    loaded_at: Mapped[datetime] = mapped_column(UTCDateTime())


class FlowPauseRow(Base):
    """A paused flow (`runner pause`): its triggers do not fire. No row: not paused."""

    __tablename__ = "flow_pauses"

    namespace: Mapped[str] = mapped_column(String(255), primary_key=True)
    flow_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    paused_at: Mapped[datetime] = mapped_column(UTCDateTime())


class TriggerStateRow(Base):
    """Where one trigger of a flow stands: when it was first seen, the latest scheduled
    time fired or passed over (a schedule) or upstream end seen (a flow trigger), the
    last execution it started, and whether `stop_after` disabled it."""

    __tablename__ = "trigger_states"

    namespace: Mapped[str] = mapped_column(String(255), primary_key=True)
    flow_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    trigger_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    last_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    execution_id: Mapped[str | None] = mapped_column(String(32))
    fired_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    disabled_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    disabled_reason: Mapped[str | None] = mapped_column(Text)


class TriggerFireRow(Base):
    """A trigger's firing, recorded with its execution in one transaction. The key (a
    scheduled time in UTC, or an upstream execution's id) is unique per flow and trigger:
    of two servers (or a server and a backfill) firing the same time, one inserts it."""

    __tablename__ = "trigger_fires"
    __table_args__ = (
        UniqueConstraint(
            "namespace", "flow_id", "trigger_id", "fire_key", name="uq_trigger_fires_fire_key"
        ),
        Index(
            "ix_trigger_fires_namespace_flow_id_trigger_id_scheduled_at",
            "namespace",
            "flow_id",
            "trigger_id",
            "scheduled_at",
        ),
    )

    id: Mapped[int] = mapped_column(BigIntegerKey, primary_key=True, autoincrement=True)
    namespace: Mapped[str] = mapped_column(String(255))
    flow_id: Mapped[str] = mapped_column(String(255))
    trigger_id: Mapped[str] = mapped_column(String(255))
    fire_key: Mapped[str] = mapped_column(String(64))
    scheduled_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    execution_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("executions.id", ondelete="CASCADE"), index=True
    )
    backfill: Mapped[bool] = mapped_column(Boolean)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


# The Core tables, for the store's queries.
executions: Table = ExecutionRow.__table__  # type: ignore[assignment]
task_runs: Table = TaskRunRow.__table__  # type: ignore[assignment]
log_lines: Table = LogLineRow.__table__  # type: ignore[assignment]
artifacts: Table = ArtifactRow.__table__  # type: ignore[assignment]
flow_locks: Table = FlowLockRow.__table__  # type: ignore[assignment]
api_tokens: Table = ApiTokenRow.__table__  # type: ignore[assignment]
flow_revisions: Table = FlowRevisionRow.__table__  # type: ignore[assignment]
flow_pauses: Table = FlowPauseRow.__table__  # type: ignore[assignment]
trigger_states: Table = TriggerStateRow.__table__  # type: ignore[assignment]
trigger_fires: Table = TriggerFireRow.__table__  # type: ignore[assignment]
