"""Alembic's entry point for the store's migrations.

`Store.open` runs them programmatically and hands over its own connection (already in a
transaction, under a lock) as `config.attributes["connection"]`. A developer can also run
`alembic upgrade head` or `alembic revision --autogenerate` from the repository root
(see alembic.ini); the URL then comes from `-x url=...`, `sqlalchemy.url` or
RUNNER_DATABASE_URL, like runner itself.
"""

from __future__ import annotations

from typing import Any

from alembic import context
from sqlalchemy import Connection, DateTime, create_engine

from runner.store.models import Base, UTCDateTime

config = context.config
target_metadata = Base.metadata


def _compare_type(
    ctx: Any, inspected_column: Any, metadata_column: Any, inspected_type: Any, metadata_type: Any
) -> bool | None:
    """UTCDateTime reads and writes SQLite's DATETIME columns as text on purpose (see
    models.py): not a difference for autogenerate to report. Otherwise, Alembic decides."""
    if isinstance(metadata_type, UTCDateTime) and isinstance(inspected_type, DateTime):
        return False
    return None


def _configure(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        # SQLite cannot ALTER most things; batch mode rebuilds the table instead.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=_compare_type,
    )


def _url() -> str:
    from runner.settings import database_url as default_database_url

    return (
        context.get_x_argument(as_dictionary=True).get("url")
        or config.get_main_option("sqlalchemy.url")
        or default_database_url()
    )


def run_migrations_offline() -> None:
    url = _url()
    context.configure(
        url=url,
        target_metadata=target_metadata,
        literal_binds=True,
        render_as_batch=url.startswith("sqlite"),
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _configure(connection)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = create_engine(_url())
    try:
        with engine.connect() as connection:
            _configure(connection)
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
