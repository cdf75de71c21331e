"""Where runner records executions, task runs, their logs and artifacts (SQLite or PostgreSQL).

    Store            intent-named reads and writes, one short transaction each
    LogWriter        a thread-safe buffer that batches log lines into Store.append_logs
    ExecutionRecord, TaskRunRecord, LogRecord, ArtifactRecord   what the reads return (frozen)
    NewLogLine       what a log line looks like on its way in
    ArtifactFile     what an artifact must offer to be recorded (runner.archives.Artifact)

The tables are in `models.py`; the Alembic migrations that create them ship in
`migrations/` and run on `Store.open`.
"""

from runner.settings import database_url as default_database_url
from runner.settings import db_retry_seconds
from runner.store.logwriter import LogWriter
from runner.store.store import (
    ArtifactFile,
    ArtifactRecord,
    ExecutionRecord,
    LogRecord,
    NewLogLine,
    SchemaRevision,
    Store,
    StoreUnavailableError,
    TaskRunRecord,
)

__all__ = [
    "ArtifactFile",
    "ArtifactRecord",
    "ExecutionRecord",
    "LogRecord",
    "LogWriter",
    "NewLogLine",
    "SchemaRevision",
    "Store",
    "StoreUnavailableError",
    "TaskRunRecord",
    "db_retry_seconds",
    "default_database_url",
]


# TEMPORARY shims until the store split lands.
from dataclasses import dataclass as _dataclass
from dataclasses import field as _field
from datetime import datetime as _datetime
from typing import Any as _Any


@_dataclass(frozen=True)
class ExecutionFilter:
    namespace: str | None = None
    flow_id: str | None = None
    states: tuple[str, ...] = ()
    labels: dict[str, str] = _field(default_factory=dict)
    created_after: _datetime | None = None
    created_before: _datetime | None = None


@_dataclass(frozen=True)
class Page:
    items: list[_Any]
    next_cursor: str | None


def open_store(url: str, *, upgrade: bool = True) -> Store:
    return Store.open(url, upgrade=upgrade)


def describe_url(url: str) -> str:
    import re

    return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", url)
