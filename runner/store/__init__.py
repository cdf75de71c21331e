"""Where runner records executions, task runs, their logs and artifacts.

    Store            the contract (a Protocol, `base.py`): intent-named reads and writes
    open_store(url)  the SQL store of a URL (SQLite or PostgreSQL), migrated: `sql.py`
    InMemoryStore    the same contract in memory, for tests (`runner.store.testing`)
    LogWriter        a thread-safe buffer that batches log lines into Store.append_log_batches
    ExecutionRecord, TaskRunRecord, LogRecord, ArtifactRecord   what the reads return (frozen)
    ExecutionFilter, Page       what `list_executions` takes and returns
    FlowState, TriggerState, TriggerFire   what a server keeps of flows and triggers
    NewLogLine, NewLogBatch   what a log line, or a batch of them, looks like on its way in
    ArtifactFile     what an artifact must offer to be recorded (runner.archives.Artifact)
    Lease, Beat      an execution's lease as stored, and what renewing it found

The package itself loads no database library: `open_store` imports SQLAlchemy (and the
driver) when called, so `runner --help` starts without them. The tables are in
`models.py`; the engine and the Alembic migrations in `engine.py` and `migrations/`.

    runner/store/
        records.py      the records, the filter and page, lease values, errors
        base.py         the Store protocol and its rules
        sql.py          SqlStore: SQLAlchemy Core, retries through outages
        engine.py       engines, URLs in messages, driver errors, migrations
        log_insert.py   the fast log insert (SQLite grouped INSERT, Postgres COPY)
        models.py       the tables
        logwriter.py    LogWriter
        testing.py      InMemoryStore and Postgres helpers for tests
"""

from __future__ import annotations

from runner.settings import database_url as default_database_url
from runner.settings import db_retry_seconds
from runner.store.base import Store
from runner.store.logwriter import LogWriter
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
    StoreUnavailableError,
    TaskRunRecord,
    TransientStoreError,
    TriggerFire,
    TriggerState,
)

__all__ = [
    "ArtifactFile",
    "ArtifactRecord",
    "Beat",
    "ExecutionFilter",
    "ExecutionRecord",
    "FlowState",
    "Lease",
    "LeaseOwner",
    "LogRecord",
    "LogWriter",
    "NewLogBatch",
    "NewLogLine",
    "Page",
    "SchemaRevision",
    "Store",
    "StoreUnavailableError",
    "TaskRunRecord",
    "TransientStoreError",
    "TriggerFire",
    "TriggerState",
    "db_retry_seconds",
    "default_database_url",
    "open_store",
]


def open_store(
    url: str | None = None, *, upgrade: bool = True, retry_seconds: float | None = None
) -> Store:
    """The store in the database at `url` (default: `RUNNER_DATABASE_URL`, else SQLite in
    .runner/runner.db), its tables brought up to date unless `upgrade` is False. Writes are
    retried through an outage for `retry_seconds` (default `RUNNER_DB_RETRY_SECONDS`).
    Any failure is a StoreError naming the database."""
    from runner.store.sql import SqlStore

    return SqlStore.open(
        url or default_database_url(), upgrade=upgrade, retry_seconds=retry_seconds
    )
