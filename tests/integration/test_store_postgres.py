"""What only a PostgreSQL server can show: its errors reach the user as one clear line,
and the schema uses Postgres' own types. The store's whole contract runs on Postgres too,
as the `postgres` half of the suite in tests/unit/test_store.py.

Needs RUNNER_TEST_POSTGRES_URL (a user with CREATEDB); skipped locally without it, a
failure in CI.
"""

from __future__ import annotations

import pytest
from sqlalchemy import create_engine, make_url

from runner.errors import StoreError
from runner.store import open_store

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
