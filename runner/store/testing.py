"""Helpers for tests that need a real PostgreSQL: a throwaway database for each test.

Not used by runner itself; shipped beside the store so that the store's tests and the
tests of the code built on it (scheduler, API, CLI) prepare Postgres the same way.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import create_engine, make_url
from sqlalchemy import exc as sa_exc

POSTGRES_URL_ENV = "RUNNER_TEST_POSTGRES_URL"
"""A URL like `postgresql+psycopg://runner:runner@127.0.0.1:5432/runner_test`; its user
needs CREATEDB. Tests create (and drop) their own databases next to that one."""


def postgres_problem(url: str) -> str | None:
    """Why the server at `url` cannot be used for tests, or None if it can."""
    engine = create_engine(url, connect_args={"connect_timeout": 5})
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
    except sa_exc.SQLAlchemyError as exc:
        reason = str(getattr(exc, "orig", exc)).strip().splitlines()
        shown = make_url(url).render_as_string(hide_password=True)
        return f"PostgreSQL at {shown} is not usable: {reason[0] if reason else exc}"
    finally:
        engine.dispose()
    return None


@contextmanager
def temporary_postgres_database(url: str) -> Iterator[str]:
    """Create a uniquely named, empty database on the server of `url`, yield its URL and
    drop it afterwards (even if a connection to it is still open)."""
    base = make_url(url)
    name = f"runner_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
        try:
            yield base.set(database=name).render_as_string(hide_password=False)
        finally:
            with admin.connect() as conn:
                conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        admin.dispose()
