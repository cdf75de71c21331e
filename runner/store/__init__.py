"""Where runner records executions, task runs and their logs (SQLite or PostgreSQL).

    Store            intent-named reads and writes, one short transaction each
    LogWriter        a thread-safe buffer that batches log lines into Store.append_logs
    ExecutionRecord, TaskRunRecord, LogRecord   what the reads return (frozen)
    NewLogLine       what a log line looks like on its way in

The tables are in `models.py`; the Alembic migrations that create them ship in
`migrations/` and run on `Store.open`.
"""

from runner.store.logwriter import LogWriter
from runner.store.store import (
    ExecutionRecord,
    LogRecord,
    NewLogLine,
    Store,
    TaskRunRecord,
    default_database_url,
)

__all__ = [
    "ExecutionRecord",
    "LogRecord",
    "LogWriter",
    "NewLogLine",
    "Store",
    "TaskRunRecord",
    "default_database_url",
]
