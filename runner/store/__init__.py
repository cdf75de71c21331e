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
