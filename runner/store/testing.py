"""Helpers for tests that need a real PostgreSQL: a throwaway database for each test.

Not used by runner itself; shipped beside the store so that the store's tests and the
tests of the code built on it (scheduler, API, CLI) prepare Postgres the same way.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Engine, create_engine, make_url
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
            _drop_database(admin, name)
    finally:
        admin.dispose()


def _drop_database(admin: Engine, name: str) -> None:
    """Drop `name`, ending the connections still open to it.

    Not `DROP DATABASE ... WITH (FORCE)`: it must also end an autovacuum worker busy in
    that database (likely after a test that wrote a lot), which only a superuser may, so
    it fails now and then. A plain DROP makes autovacuum workers leave by itself; our own
    connections are ended first, and a connection that races in is retried."""
    for tries in range(20):
        with admin.connect() as conn:
            conn.exec_driver_sql(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = %(name)s AND pid <> pg_backend_pid()"
                " AND usename = current_user",
                {"name": name},
            )
            try:
                conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}"')
                return
            except sa_exc.OperationalError:  # "is being accessed by other users"
                if tries == 19:
                    raise
        time.sleep(0.25)
