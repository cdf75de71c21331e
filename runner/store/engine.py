"""The database behind `SqlStore`: the SQLAlchemy engine (SQLite pragmas, Postgres connect
arguments), how a URL is named in messages, what a driver error says and whether it may
pass, and the Alembic migrations (`migrate`, `schema_revision`).

SQLite is set up for many writers: WAL journal, a 30 s busy timeout, and writes that
start with `BEGIN IMMEDIATE` so that a second writer (a thread or another process) waits
for the lock instead of failing half way through its transaction.
"""

from __future__ import annotations

import re
import sqlite3
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import URL, Connection, Engine, create_engine, event, inspect, text
from sqlalchemy import exc as sa_exc
from sqlalchemy.pool import ConnectionPoolEntry, StaticPool

from runner.errors import StoreError
from runner.store.records import SchemaRevision

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS = Path(__file__).parent / "migrations"

SQLITE_BUSY_TIMEOUT_S = 30
PG_CONNECT_TIMEOUT_S = 10
PG_POOL_SIZE = 12
"""Connections kept open to a database server. Each running execution talks to the store
from a few threads at once (scheduler, attempts, log writer, lease): with SQLAlchemy's
default of 5, a server running 8 executions closed and reopened a connection (a new
Postgres backend process) about twice per execution."""
PG_POOL_OVERFLOW = 20
_PG_MIGRATION_LOCK = 0x72756E6E6572  # "runner": serialises migrations of one database

WRITE = "runner_write"
"""Execution option: this transaction writes (on SQLite: `BEGIN IMMEDIATE`)."""


# -- naming the database -------------------------------------------------------------------

_DEFAULT_PORTS = {"postgresql": 5432, "mysql": 3306, "mariadb": 3306, "mssql": 1433, "oracle": 1521}


def describe(url: URL) -> str:
    """`postgresql database 'runner' at 127.0.0.1:5432` or `sqlite database '/x/runner.db'`.

    Where libpq connects: `?host=` and `?port=` in the query win over the URL's own host
    and port (SQLAlchemy's psycopg dialect passes them on), may name several hosts (tried
    in turn) and a Unix socket folder.
    """
    dialect = url.get_backend_name()
    if dialect == "sqlite":
        return f"sqlite database '{url.database or ':memory:'}'"
    name = f" '{url.database}'" if url.database else ""
    hosts = _query_list(url, "host") or [url.host or "localhost"]
    ports = _query_list(url, "port") or [str(url.port or _DEFAULT_PORTS.get(dialect) or "")]
    if len(ports) == 1:  # libpq: one port for every host, or one per host
        ports *= len(hosts)
    places = []
    for host, port in zip(hosts, ports + [""] * len(hosts), strict=False):
        host = host or "localhost"
        if host.startswith("/"):
            places.append(f"the socket in {host}" + (f" (port {port})" if port else ""))
        else:
            places.append(f"{host}:{port}" if port else host)
    return f"{dialect} database{name} at {' or '.join(places)}"


def _query_list(url: URL, key: str) -> list[str]:
    """A query parameter of `url` as a list: `host=a,b`, `host=a&host=b`, or none."""
    value = url.query.get(key)
    items = [value] if isinstance(value, str) else list(value or ())
    return [part.strip() for item in items for part in item.split(",")]


def mask_password(raw_url: str) -> str:
    """A URL as typed, with its password (if any) shown as ***."""
    return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", raw_url)


# -- what a driver error says ---------------------------------------------------------------

_PG_SERVER_PREFIX = re.compile(
    r'^(?:- host: .*?: )?(?:connection failed: )?(?:connection to server at "[^"]*"(?: \([^)]*\))?, port \d+ failed: )?'
)


def reason(exc: BaseException) -> str:
    """The driver's own words for what went wrong, on one line, without the noise."""
    orig = getattr(exc, "orig", None) or exc
    text = str(orig).strip()
    parts: list[str] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(
            ("Multiple connection attempts failed", "All failures were")
        ):
            continue
        if line.startswith(("[SQL:", "[parameters:", "(Background on this error", "CONTEXT:")):
            break  # SQLAlchemy's and Postgres' notes (CONTEXT: the row within a COPY)
        line = _PG_SERVER_PREFIX.sub("", line)
        line = re.sub(r"^(?:FATAL|ERROR):\s+", "", line)
        if line.startswith("Is the server running") and parts:
            parts[-1] += f" ({line[0].lower()}{line[1:]})"
            continue
        if line not in parts:
            parts.append(line)
    return "; ".join(parts) or type(orig).__name__


# SQLSTATE classes of PostgreSQL errors that a new try may get past: connection
# exceptions, transaction rollbacks (deadlock, serialization), insufficient resources
# (too many connections, disk full), operator intervention (shutdown, query cancelled),
# system errors (I/O). Anything else (bad data 22, constraints 23, program limits 54, ...)
# fails the same way every time.
_PG_TRANSIENT_CLASSES = ("08", "40", "53", "57", "58")
_PG_TRANSIENT_CODES = ("55P03",)  # lock_not_available


def is_transient(exc: BaseException | None) -> bool:
    """Whether a failed write may succeed on a new try: the connection dropped or could not
    be made, the server is shutting down or starting up, a deadlock or serialization
    failure rolled the transaction back, or SQLite stayed locked past its busy timeout.
    Constraint violations, bad data, program limits and the like are not."""
    if isinstance(exc, sa_exc.DisconnectionError | sa_exc.TimeoutError):
        return True  # a pool checkout that could not reconnect, or no free connection
    if not isinstance(exc, sa_exc.DBAPIError):
        return False
    if exc.connection_invalidated:  # the dialect recognised a disconnect
        return True
    if not isinstance(exc, sa_exc.OperationalError):
        return False
    if isinstance(exc.orig, sqlite3.Error):
        # Most SQLite OperationalErrors ("no such table", "unable to open") are for good.
        text = str(exc.orig).lower()
        return "locked" in text or "busy" in text
    # psycopg's OperationalError: without a SQLSTATE the client lost or could not make the
    # connection; with one, the server said what happened.
    sqlstate = getattr(exc.orig, "sqlstate", None)
    if not sqlstate:
        return True
    return sqlstate[:2] in _PG_TRANSIENT_CLASSES or sqlstate in _PG_TRANSIENT_CODES


# -- engines -----------------------------------------------------------------------------------


def _utc_session(dbapi_connection: Any, connection_record: Any) -> None:
    """Times come back in UTC already (the store's records are in UTC): reading a page of
    log lines then converts none of them."""
    with dbapi_connection.cursor() as cursor:
        cursor.execute("SET TIME ZONE 'UTC'")
    dbapi_connection.commit()


def create(url: URL, where: str) -> Engine:
    """An engine for `url`, set up for runner; a StoreError naming `where` if it cannot be."""
    backend = url.get_backend_name()
    try:
        if backend == "sqlite":
            return _create_sqlite_engine(url, where)
        connect_args: dict[str, Any] = {}
        if backend == "postgresql" and "connect_timeout" not in url.query:
            connect_args["connect_timeout"] = PG_CONNECT_TIMEOUT_S
        engine = create_engine(
            url,
            pool_pre_ping=True,
            pool_size=PG_POOL_SIZE,
            max_overflow=PG_POOL_OVERFLOW,
            connect_args=connect_args,
        )
        if backend == "postgresql":
            event.listen(engine, "connect", _utc_session)
        return engine
    except sa_exc.NoSuchModuleError as exc:
        raise StoreError(
            f"cannot open {where}: unknown database driver '{url.drivername}'"
        ) from exc
    except ImportError as exc:
        raise StoreError(
            f"cannot open {where}: the driver for '{url.drivername}' is not installed ({exc})"
        ) from exc
    except (sa_exc.ArgumentError, TypeError, ValueError) as exc:
        raise StoreError(f"cannot open {where}: {reason(exc)}") from exc


def _create_sqlite_engine(url: URL, where: str) -> Engine:
    database = url.database or ""
    in_memory = database in ("", ":memory:") or database.startswith("file::memory:")
    connect_args: dict[str, Any] = {"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_S}
    if in_memory:
        engine = create_engine(url, connect_args=connect_args, poolclass=StaticPool)
    else:
        try:
            Path(database).expanduser().absolute().parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot open {where}: cannot create its folder: {exc}") from exc
        engine = create_engine(url, connect_args=connect_args)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, connection_record: ConnectionPoolEntry) -> None:
        # Let SQLAlchemy, not the sqlite3 module, decide when a transaction begins.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_S * 1000}")
            cursor.execute("PRAGMA foreign_keys = ON")
            if not in_memory:
                set_wal(cursor)
                # With WAL this cannot corrupt the database; it only skips an fsync a commit.
                cursor.execute("PRAGMA synchronous = NORMAL")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        # A writer takes the write lock up front (waiting up to busy_timeout for it), so
        # it never fails on a lock upgrade; readers keep WAL's concurrent snapshots.
        if conn.get_execution_options().get(WRITE):
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            conn.exec_driver_sql("BEGIN")

    return engine


def set_wal(cursor: Any, *, timeout_s: float = SQLITE_BUSY_TIMEOUT_S) -> None:
    """Put the SQLite database of `cursor` in WAL mode, waiting for other processes.

    WAL is stored in the file, so this only writes once, the first time anyone opens a new
    database. That switch needs the file to itself, and while another connection holds
    the write lock of a file not yet in WAL (another process opening the new database at
    the same moment, creating its tables), SQLite refuses it at once, without waiting
    for its busy timeout: "database is locked". So a locked answer is tried again, with
    short pauses, for as long as the busy timeout."""
    deadline = time.monotonic() + timeout_s
    pause = 0.005
    while True:
        try:
            if str(cursor.execute("PRAGMA journal_mode").fetchone()[0]).lower() == "wal":
                return
            cursor.execute("PRAGMA journal_mode = WAL").fetchall()
            return
        except sqlite3.OperationalError as exc:
            text = str(exc).lower()
            if ("locked" not in text and "busy" not in text) or time.monotonic() > deadline:
                raise
        time.sleep(pause)
        pause = min(pause * 2, 0.2)


# -- migrations --------------------------------------------------------------------------------


def shipped_head() -> str:
    """The newest migration runner ships, read without Alembic: the highest number of
    the files in versions/ (numbered in order, each revising the one before it; a unit
    test holds this to Alembic's own head). Importing Alembic (and Mako and Pygments
    through it) cost every command that opens the database about 0.2 s, to find the
    schema up to date."""
    return max(p.name[:4] for p in (MIGRATIONS / "versions").glob("[0-9][0-9][0-9][0-9]_*.py"))


def stored_revision(conn: Connection) -> str | None:
    """The revision in the database's `alembic_version` table (None without it), as
    Alembic's MigrationContext reads it; None also when it holds several rows."""
    if not inspect(conn).has_table("alembic_version"):
        return None
    rows = conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all()
    return str(rows[0]) if len(rows) == 1 else None


def alembic_config() -> Config:
    """Alembic's configuration for the store's migrations; no alembic.ini needed."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def schema_revision(conn: Connection) -> SchemaRevision:
    """The migration revision of the database of `conn` and the newest this runner ships."""
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    scripts = ScriptDirectory.from_config(alembic_config())
    head = scripts.get_current_head()
    assert head is not None, "runner ships at least one migration"
    known = {script.revision for script in scripts.walk_revisions()}
    current = MigrationContext.configure(conn).get_current_revision()
    return SchemaRevision(current=current, head=head, known=current is None or current in known)


def migrate(engine: Engine, where: str) -> None:
    """Upgrade the database to the newest migration, once even with concurrent openers.

    The common case (already up to date) only reads. Otherwise the upgrade runs in one
    write transaction taken under a lock (SQLite's write lock, a Postgres advisory lock),
    so a second process waits and then finds nothing to do. If some database still lets
    two upgrades race, the loser sees "already exists" and simply looks again. Alembic
    is imported only when the database is not at `shipped_head()`.
    """
    with engine.connect() as conn:
        if stored_revision(conn) == shipped_head():
            return
    from alembic.util import CommandError

    try:
        _upgrade(engine, where)
    except CommandError as exc:
        raise StoreError(f"cannot create or upgrade the tables of {where}: {reason(exc)}") from exc


def _upgrade(engine: Engine, where: str) -> None:
    from alembic import command
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    config = alembic_config()
    scripts = ScriptDirectory.from_config(config)
    head = scripts.get_current_head()
    known = {script.revision for script in scripts.walk_revisions()}
    writer = engine.execution_options(**{WRITE: True})
    for attempt in (1, 2):
        with engine.connect() as conn:
            current = MigrationContext.configure(conn).get_current_revision()
        if current == head:
            return
        if current is not None and current not in known:
            raise StoreError(
                f"{where} has schema revision '{current}', which this version of runner"
                f" does not know (it knows up to '{head}'): upgrade runner"
            )
        try:
            with writer.begin() as conn:
                if conn.dialect.name == "postgresql":
                    conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_PG_MIGRATION_LOCK})")
                config.attributes["connection"] = conn
                command.upgrade(config, "head")
            return
        except (sa_exc.OperationalError, sa_exc.ProgrammingError, sa_exc.IntegrityError) as exc:
            if attempt == 2 or "already exists" not in str(exc).lower():
                raise
        finally:
            config.attributes.pop("connection", None)
