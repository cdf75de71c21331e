"""What only a PostgreSQL server can show: its errors reach the user as one clear line,
and the schema uses Postgres' own types. The store's whole contract runs on Postgres too,
as the `postgres` half of the suite in tests/unit/test_store.py.

Needs RUNNER_TEST_POSTGRES_URL (a user with CREATEDB); skipped locally without it, a
failure in CI.
"""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime

import pytest
from sqlalchemy import create_engine, make_url

from runner.errors import StoreError
from runner.store import LogWriter, NewLogBatch, NewLogLine, open_store
from runner.store.log_insert import insert_log_batches
from runner.store.sql import SqlStore

pytestmark = pytest.mark.postgres


@pytest.fixture
def server_url(postgres_server_url: str) -> str:
    return postgres_server_url


@pytest.fixture
def database_url(postgres_database_url: str) -> str:
    return postgres_database_url


def open_error(url: str) -> str:
    with pytest.raises(StoreError) as raised:
        open_store(url)
    message = str(raised.value)
    assert "\n" not in message
    return message


def test_wrong_password_is_one_clear_line(server_url: str) -> None:
    url = make_url(server_url).set(password="not-the-password")
    where = f"{url.host}:{url.port or 5432}"
    message = open_error(url.render_as_string(hide_password=False))
    assert message == (
        f"cannot connect to postgresql database '{url.database}' at {where}: "
        f'password authentication failed for user "{url.username}"'
    )
    assert "not-the-password" not in message


def test_unknown_database_is_one_clear_line(server_url: str) -> None:
    url = make_url(server_url).set(database="runner_no_such_database")
    message = open_error(url.render_as_string(hide_password=False))
    assert message.startswith("cannot connect to postgresql database 'runner_no_such_database' at ")
    assert message.endswith('database "runner_no_such_database" does not exist')
    if url.password:
        assert f":{url.password}@" not in message


def test_unreachable_server_is_one_clear_line() -> None:
    message = open_error("postgresql+psycopg://runner:secret@127.0.0.1:1/runner")
    assert message.startswith(
        "cannot connect to postgresql database 'runner' at 127.0.0.1:1: Connection refused"
    )
    assert "secret" not in message


def test_postgres_schema_uses_jsonb_and_timestamptz(database_url: str) -> None:
    open_store(database_url).close()
    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            types = dict(
                conn.exec_driver_sql(
                    "SELECT table_name || '.' || column_name, data_type FROM information_schema.columns"
                    " WHERE table_schema = 'public'"
                ).all()
            )
    finally:
        engine.dispose()
    assert types["executions.inputs"] == "jsonb"
    assert types["task_runs.outputs"] == "jsonb"
    assert types["executions.created_at"] == "timestamp with time zone"
    assert types["log_lines.time"] == "timestamp with time zone"
    assert types["log_lines.id"] == "bigint"


def test_a_line_postgres_refuses_fails_at_once_naming_its_number(database_url: str) -> None:
    """A permanent error (a value too long for its column) is not retried for
    RUNNER_DB_RETRY_SECONDS: the writer stores the lines before it and names the task and
    the line's number in the task's output."""
    with open_store(database_url, retry_seconds=60) as store:
        execution_id = uuid.uuid4().hex
        store.create_execution(
            execution_id=execution_id,
            flow_id="f",
            namespace="n",
            revision="r",
            source="",
            inputs={},
            labels={},
        )
        run_id = store.create_task_run(
            execution_id=execution_id, task_id="extract", attempt=1, image=None
        )

        def line(text: str, stream: str = "stdout") -> NewLogLine:
            return NewLogLine(execution_id, run_id, "extract", stream, text, datetime.now(UTC))

        writer = LogWriter(store, flush_interval=60)
        writer.add(line("one"))
        writer.flush()
        for text in ("two", "three", "four"):
            writer.add(line(text))
        writer.add(line("five", stream="stdout-but-longer"))  # varchar(6)
        writer.add(line("six"))
        started = time.monotonic()
        with pytest.raises(StoreError) as raised:
            writer.flush()
        assert time.monotonic() - started < 10
        message = str(raised.value)
        assert message.startswith(
            f"line 5 of task 'extract' (execution {execution_id}) cannot be stored, so its"
            " output ends before it (2 lines lost): cannot store 1 log lines in postgresql"
        )
        assert message.endswith("value too long for type character varying(6)")
        assert [ln.line for ln in store.get_logs(execution_id)] == ["one", "two", "three", "four"]


def test_nul_in_a_log_line_is_stored_by_copy_and_by_insert(database_url: str) -> None:
    """psycopg's COPY (the fast path) and an ordinary INSERT both keep the line."""
    with open_store(database_url) as store:
        assert isinstance(store, SqlStore)
        execution_id = uuid.uuid4().hex
        store.create_execution(
            execution_id=execution_id,
            flow_id="f",
            namespace="n",
            revision="r",
            source="",
            inputs={},
            labels={},
        )
        run_id = store.create_task_run(
            execution_id=execution_id, task_id="t", attempt=1, image=None
        )
        now = datetime.now(UTC)
        store.append_logs([NewLogLine(execution_id, run_id, "t", "stdout", "a\x00b", now)])
        with store._engine.begin() as conn:
            insert_log_batches(
                conn.execution_options(),
                [NewLogBatch(execution_id, run_id, "t", "stdout", now, ("c\x00d",))],
                None,
            )
        assert [ln.line for ln in store.get_logs(execution_id)] == ["a\u2400b", "c\u2400d"]
