"""The store's contract, run on SQLite, (with the `postgres` marker) PostgreSQL, and the
in-memory store, so that the double is shown to behave like the real thing.

Every test that takes `store` runs once per store: SQLite in a fresh folder under
tmp_path, Postgres in a freshly created database (RUNNER_TEST_POSTGRES_URL, skipped
locally when unset or unreachable, a failure in CI), and `InMemoryStore`. Tests of what
only a database has (migrations, URLs, SQL statements, several processes) take
`sql_store` or `store_url` and run on the two databases. Postgres-only behaviour (server
errors such as a wrong password) is in tests/integration/test_store_postgres.py.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import psycopg
import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import DateTime, Engine, create_engine, event, insert, inspect, make_url
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine.interfaces import DBAPICursor

from runner.archives import Artifact
from runner.errors import NotFoundError, StoreError, UsageError
from runner.execution import ExecutionState, TaskState
from runner.lease import Beat, Lease, Owner, is_expired
from runner.store import (
    ArtifactRecord,
    ExecutionFilter,
    ExecutionRecord,
    LogWriter,
    NewLogBatch,
    NewLogLine,
    Store,
    TaskRunRecord,
    TransientStoreError,
    default_database_url,
)
from runner.store.engine import alembic_config, describe, is_transient, shipped_head
from runner.store.log_insert import copy_text
from runner.store.models import Base, UTCDateTime, executions, log_lines, task_runs
from runner.store.sql import SqlStore
from runner.store.testing import InMemoryStore, temporary_postgres_database

T0 = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
HEAD_REVISION = "0006"
POSTGRES = pytest.param("postgres", marks=pytest.mark.postgres)


@contextmanager
def _database_url(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A URL of an empty database: a SQLite file whose folder does not exist yet, or a
    new Postgres database dropped after the test."""
    if kind == "sqlite":
        yield f"sqlite:///{tmp_path / 'nested' / '.runner' / 'runner.db'}"
        return
    server = request.getfixturevalue("postgres_server_url")
    with temporary_postgres_database(server) as url:
        yield url


@pytest.fixture(params=["sqlite", POSTGRES])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with _database_url(request.param, request, tmp_path) as url:
        yield url


@pytest.fixture
def sql_store(store_url: str) -> Iterator[SqlStore]:
    """The store in a database (what only SQL has: statements, engines, URLs)."""
    opened = SqlStore.open(store_url)
    yield opened
    opened.close()


@pytest.fixture(params=["sqlite", POSTGRES, "memory"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """Each store that keeps the contract: SQLite, PostgreSQL and the in-memory double."""
    if request.param == "memory":
        yield InMemoryStore()
        return
    with _database_url(request.param, request, tmp_path) as url, SqlStore.open(url) as opened:
        yield opened


def backdate_heartbeat(store: Store, execution_id: str, seconds: float) -> None:
    """Make the last heartbeat of an execution `seconds` older (its runner went quiet)."""
    if isinstance(store, InMemoryStore):
        row = store._executions[execution_id]
        assert row.heartbeat_at is not None
        row.heartbeat_at -= timedelta(seconds=seconds)
        return
    assert isinstance(store, SqlStore)
    (lease,) = store.active_leases(execution_id, lease_s=30)
    assert lease.heartbeat_at is not None
    with store._engine.begin() as conn:
        conn.execute(
            executions.update()
            .where(executions.c.id == execution_id)
            .values(heartbeat_at=lease.heartbeat_at - timedelta(seconds=seconds))
        )


def set_created_at(store: Store, execution_ids: list[str], when: datetime) -> None:
    """Give executions the same creation time (to see ties broken by id)."""
    if isinstance(store, InMemoryStore):
        for execution_id in execution_ids:
            store._executions[execution_id].created_at = when
        return
    assert isinstance(store, SqlStore)
    with store._engine.begin() as conn:
        conn.execute(
            executions.update().where(executions.c.id.in_(execution_ids)).values(created_at=when)
        )


def new_execution(store: Store, *, flow_id: str = "etl", execution_id: str | None = None) -> str:
    execution_id = execution_id or uuid.uuid4().hex
    store.create_execution(
        execution_id=execution_id,
        flow_id=flow_id,
        namespace="team",
        revision="a" * 64,
        source="id: etl\ntasks: []\n",
        inputs={"day": "2024-05-01"},
        labels={"owner": "data"},
    )
    return execution_id


def log_line(
    execution_id: str, run_id: int, task_id: str, text: str, stream: str = "stdout"
) -> NewLogLine:
    return NewLogLine(
        execution_id=execution_id,
        task_run_id=run_id,
        task_id=task_id,
        stream=stream,
        line=text,
        time=T0,
    )


# -- opening ---------------------------------------------------------------------------


def test_open_creates_the_tables_and_records_the_revision(store_url: str) -> None:
    SqlStore.open(store_url).close()
    engine = create_engine(store_url)
    try:
        tables = set(inspect(engine).get_table_names())
        with engine.connect() as conn:
            revision = conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar_one()
    finally:
        engine.dispose()
    assert {"executions", "task_runs", "log_lines", "artifacts", "alembic_version"} <= tables
    assert revision == HEAD_REVISION


def test_the_shipped_head_is_alembics_head() -> None:
    """`shipped_head` reads the newest migration from the file names, without Alembic."""
    scripts = ScriptDirectory.from_config(alembic_config())
    assert shipped_head() == scripts.get_current_head() == HEAD_REVISION


def test_opening_an_up_to_date_database_does_not_import_alembic(store_url: str) -> None:
    """Alembic (with Mako and Pygments) is imported only to upgrade: every command that
    opens the database would pay for it at start-up."""
    SqlStore.open(store_url).close()
    code = (
        "import sys\n"
        "from runner.store.sql import SqlStore\n"
        f"store = SqlStore.open({store_url!r})\n"
        "store.close()\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('alembic', 'mako')))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "[]"


def test_open_again_keeps_the_data(store_url: str) -> None:
    with SqlStore.open(store_url) as store:
        execution_id = new_execution(store)
    with SqlStore.open(store_url) as store:
        assert store.get_execution(execution_id).id == execution_id


def test_a_database_from_a_newer_runner_is_refused(store_url: str) -> None:
    SqlStore.open(store_url).close()
    engine = create_engine(store_url)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql("UPDATE alembic_version SET version_num = '9999'")
    finally:
        engine.dispose()
    with pytest.raises(
        StoreError, match="has schema revision '9999', which this version of runner does not know"
    ):
        SqlStore.open(store_url)


def test_url_hides_the_password(sql_store: SqlStore, store_url: str) -> None:
    store = sql_store
    password = make_url(store_url).password
    if password:
        assert f":{password}@" not in store.url and ":***@" in store.url
        assert ":***@" in repr(store)
    assert make_url(store.url).database == make_url(store_url).database


# -- the life of an execution ------------------------------------------------------------


def test_execution_lifecycle(store: Store) -> None:
    execution_id = new_execution(store)
    created = store.get_execution(execution_id)
    assert created.state is ExecutionState.CREATED
    assert created.created_at.tzinfo is UTC
    assert created.started_at is None and created.ended_at is None and created.duration_s is None
    assert created.task_runs == ()

    store.set_execution_state(execution_id, ExecutionState.RUNNING)
    run_id = store.create_task_run(
        execution_id=execution_id, task_id="extract", attempt=1, image="alpine:3"
    )
    store.task_run_started(run_id, container_id="c0ffee", started_at=T0)
    store.append_logs([log_line(execution_id, run_id, "extract", "hello")])
    store.finish_task_run(
        run_id,
        state=TaskState.SUCCESS,
        exit_code=0,
        ended_at=T0 + timedelta(seconds=2.5),
        outputs={"rows": 3},
    )
    skipped_id = store.record_skipped(
        execution_id=execution_id, task_id="load", reason="upstream 'extract' failed"
    )
    store.set_execution_state(execution_id, ExecutionState.FAILED, error="task(s) failed: extract")

    record = store.get_execution(execution_id)
    assert record.state is ExecutionState.FAILED
    assert record.error == "task(s) failed: extract"
    assert record.started_at is not None and record.ended_at is not None
    assert record.started_at <= record.ended_at
    assert record.duration_s is not None and record.duration_s >= 0
    assert (record.flow_id, record.namespace, record.revision) == ("etl", "team", "a" * 64)
    assert record.inputs == {"day": "2024-05-01"} and record.labels == {"owner": "data"}

    run, skipped = record.task_runs
    assert run == TaskRunRecord(
        id=run_id,
        execution_id=execution_id,
        task_id="extract",
        attempt=1,
        state=TaskState.SUCCESS,
        exit_code=0,
        image="alpine:3",
        container_id="c0ffee",
        error=None,
        outputs={"rows": 3},
        created_at=run.created_at,
        started_at=T0,
        ended_at=T0 + timedelta(seconds=2.5),
    )
    assert run.duration_s == 2.5
    assert skipped.id == skipped_id
    assert (skipped.task_id, skipped.attempt, skipped.state) == ("load", 1, TaskState.SKIPPED)
    assert skipped.error == "upstream 'extract' failed"
    assert skipped.ended_at is not None and skipped.started_at is None
    assert skipped.duration_s is None
    assert store.get_execution_source(execution_id) == "id: etl\ntasks: []\n"


def test_running_twice_keeps_the_first_start(store: Store) -> None:
    execution_id = new_execution(store)
    store.set_execution_state(execution_id, ExecutionState.RUNNING)
    first = store.get_execution(execution_id).started_at
    time.sleep(0.01)
    store.set_execution_state(execution_id, ExecutionState.RUNNING)
    assert store.get_execution(execution_id).started_at == first


def test_finish_task_run_defaults_ended_at_to_now(store: Store) -> None:
    execution_id = new_execution(store)
    run_id = store.create_task_run(execution_id=execution_id, task_id="t", attempt=1, image=None)
    before = datetime.now(UTC)
    store.finish_task_run(run_id, state=TaskState.KILLED, error="killed before it started")
    (run,) = store.get_execution(execution_id).task_runs
    assert run.state is TaskState.KILLED
    assert run.ended_at is not None and run.ended_at >= before - timedelta(seconds=1)
    assert run.image is None and run.exit_code is None and run.outputs is None


def test_the_node_a_task_run_ran_on_is_kept(store: Store) -> None:
    """A backend of several machines (Swarm) says where each task run went; one engine
    says nothing, and the column stays empty."""
    execution_id = new_execution(store)
    placed = store.create_task_run(execution_id=execution_id, task_id="a", attempt=1, image=None)
    alone = store.create_task_run(execution_id=execution_id, task_id="b", attempt=1, image=None)
    store.finish_task_run(placed, state=TaskState.SUCCESS, exit_code=0, node="worker1")
    store.finish_task_run(alone, state=TaskState.SUCCESS, exit_code=0)
    first, second = store.get_execution(execution_id).task_runs
    assert (first.node, second.node) == ("worker1", None)
    assert first.to_dict()["node"] == "worker1" and second.to_dict()["node"] is None


def test_retries_are_separate_task_runs_in_order(store: Store) -> None:
    execution_id = new_execution(store)
    ids = [
        store.create_task_run(execution_id=execution_id, task_id="flaky", attempt=n, image="img")
        for n in (1, 2, 3)
    ]
    assert ids == sorted(ids)
    runs = store.get_execution(execution_id).task_runs
    assert [(r.id, r.attempt) for r in runs] == list(zip(ids, (1, 2, 3), strict=True))


def test_unknown_ids_raise_not_found(store: Store) -> None:
    with pytest.raises(NotFoundError, match="no execution matches 'nope1234'"):
        store.set_execution_state("nope1234", ExecutionState.RUNNING)
    with pytest.raises(NotFoundError, match="no task run has id 999999"):
        store.finish_task_run(999999, state=TaskState.SUCCESS)
    with pytest.raises(NotFoundError, match="no task run has id 999999"):
        store.task_run_started(999999, container_id=None, started_at=T0)
    with pytest.raises(NotFoundError):
        store.get_execution_source("nope1234")


def test_a_task_run_of_an_unknown_execution_is_a_store_error(store: Store) -> None:
    with pytest.raises(StoreError, match="cannot record attempt 1 of task 't'"):
        store.create_task_run(execution_id="0" * 32, task_id="t", attempt=1, image=None)


def test_to_dict_is_json_ready(store: Store) -> None:
    execution_id = new_execution(store)
    store.set_execution_state(execution_id, ExecutionState.RUNNING)
    run_id = store.create_task_run(execution_id=execution_id, task_id="t", attempt=1, image="img")
    store.task_run_started(run_id, container_id="c1", started_at=T0)
    store.finish_task_run(
        run_id, state=TaskState.FAILED, exit_code=3, ended_at=T0 + timedelta(seconds=1)
    )
    data = json.loads(json.dumps(store.get_execution(execution_id).to_dict()))
    assert data["id"] == execution_id and data["state"] == "RUNNING"
    assert data["created_at"].endswith("+00:00") and data["ended_at"] is None
    (run,) = data["task_runs"]
    assert run["state"] == "FAILED" and run["exit_code"] == 3
    assert run["started_at"] == "2024-05-01T12:00:00+00:00"
    assert run["duration_s"] == 1.0


# -- finding executions ------------------------------------------------------------------


def test_get_execution_by_unique_prefix(store: Store) -> None:
    one = new_execution(store, execution_id="abcd1111" + "0" * 24)
    two = new_execution(store, execution_id="abcd2222" + "0" * 24)
    assert store.get_execution("abcd1").id == one
    assert store.get_execution(two).id == two
    with pytest.raises(NotFoundError, match="'abcd' is ambiguous") as ambiguous:
        store.get_execution("abcd")
    assert one in str(ambiguous.value) and two in str(ambiguous.value)
    with pytest.raises(NotFoundError, match=r"^no execution matches 'abc'"):
        store.get_execution("abc")  # too short to be a prefix
    with pytest.raises(NotFoundError, match=r"^no execution matches 'ffff'$"):
        store.get_execution("ffff")
    with pytest.raises(NotFoundError):
        store.get_execution("ab%d")  # LIKE wildcards are matched literally


def test_list_executions_newest_first_with_filters(store: Store) -> None:
    ids = []
    for flow_id in ("a", "b", "a", "b", "a"):
        ids.append(new_execution(store, flow_id=flow_id))
        time.sleep(0.002)
    store.set_execution_state(ids[0], ExecutionState.SUCCESS)
    store.set_execution_state(ids[4], ExecutionState.SUCCESS)
    store.create_task_run(execution_id=ids[4], task_id="t", attempt=1, image=None)
    store.record_skipped(execution_id=ids[4], task_id="u", reason="because")

    def listed(where: ExecutionFilter | None = None, limit: int = 20) -> list[str]:
        return [r.id for r in store.list_executions(where, limit=limit).items]

    everything = store.list_executions().items
    assert [r.id for r in everything] == ids[::-1]
    assert listed(ExecutionFilter(flow_id="a")) == [ids[4], ids[2], ids[0]]
    assert listed(ExecutionFilter(states=["SUCCESS"])) == [ids[4], ids[0]]
    assert listed(ExecutionFilter(states=["success"], flow_id="b")) == []
    assert listed(ExecutionFilter(states=[ExecutionState.CREATED])) == [ids[3], ids[2], ids[1]]
    assert listed(limit=2) == [ids[4], ids[3]]
    assert [t.task_id for t in everything[0].task_runs] == ["t", "u"]
    assert all(r.task_runs == () for r in everything[1:])
    assert listed(ExecutionFilter(flow_id="nothing")) == []


def test_list_executions_reads_task_runs_in_one_query(sql_store: SqlStore) -> None:
    store = sql_store
    for _ in range(5):
        execution_id = new_execution(store)
        store.create_task_run(execution_id=execution_id, task_id="t", attempt=1, image=None)
    found: list[Any] = []
    selects = _selects(lambda: found.extend(store.list_executions().items))
    assert len(found) == 5 and all(len(r.task_runs) == 1 for r in found)
    assert len(selects) == 2, selects


def _selects(read: Callable[[], object]) -> list[tuple[str, Any]]:
    """The SELECT statements (with their parameters) that `read` runs."""
    statements: list[tuple[str, Any]] = []

    def keep(
        conn: Any,
        cursor: DBAPICursor,
        statement: str,
        parameters: Any,
        context: Any,
        executemany: bool,
    ) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            statements.append((statement, parameters))

    event.listen(Engine, "before_cursor_execute", keep)
    try:
        read()
    finally:
        event.remove(Engine, "before_cursor_execute", keep)
    return statements


def _sqlite_plans(store: SqlStore, read: Callable[[], object]) -> list[str]:
    """SQLite's plan (EXPLAIN QUERY PLAN) of each SELECT that `read` runs."""
    statements = _selects(read)
    path = make_url(store.url).database
    assert path is not None
    with sqlite3.connect(path) as conn:
        # The statistics ANALYZE keeps of a history of 100,000 executions (9 in 10 of
        # them SUCCESS) and 10 M lines: SQLite plans by them (bench/history.py's database).
        conn.execute("ANALYZE")
        conn.execute("DELETE FROM sqlite_stat1")
        conn.executemany(
            "INSERT INTO sqlite_stat1 (tbl, idx, stat) VALUES (?, ?, ?)",
            [
                ("log_lines", "ix_log_lines_execution_id_id", "10000000 10000 1"),
                ("task_runs", "ix_task_runs_execution_id", "100000 1"),
                ("task_runs", None, "100000"),
            ]
            + [
                ("executions", idx, stat)
                for idx, stat in [
                    ("ix_executions_state_created_at_id", "100000 50000 1 1"),
                    ("ix_executions_state", "100000 50000"),
                    ("ix_executions_created_at_id", "100000 1 1"),
                    ("ix_executions_namespace_created_at_id", "100000 20000 1 1"),
                    ("ix_executions_flow_id_created_at", "100000 2000 1"),
                    ("ix_executions_namespace_flow_id_state", "100000 20000 2000 2000"),
                    ("ix_executions_namespace_flow_id_ended_at", "100000 20000 2000 1"),
                    ("sqlite_autoindex_executions_1", "100000 1"),
                ]
            ],
        )
        conn.commit()
    with sqlite3.connect(path) as conn:  # plans by the statistics just written
        return [
            " / ".join(row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}", params))
            for sql, params in statements
        ]


def test_history_reads_go_through_indexes(tmp_path: Path) -> None:
    """What `runner executions`, `show` and `logs --tail` read from a long history, SQLite
    finds through an index instead of reading every execution or line (a page deep in the
    history, an id prefix, the end of a log, a task run's line count). Postgres's plans
    were checked with EXPLAIN ANALYZE on the benchmark's history (bench/history.py)."""
    store = SqlStore.open(f"sqlite:///{tmp_path / 'runner.db'}")
    try:
        ids = [new_execution(store) for _ in range(3)]
        run_id = store.create_task_run(execution_id=ids[0], task_id="a", attempt=1, image=None)
        store.append_logs([log_line(ids[0], run_id, "a", "x")])
        cursor = store.list_executions(limit=1).next_cursor
        reads: dict[str, Callable[[], object]] = {
            "deep page": lambda: store.list_executions(after=cursor, limit=1),
            "failed page": lambda: store.list_executions(
                ExecutionFilter(states=["FAILED"]), after=cursor, limit=1
            ),
            "id prefix": lambda: store.get_execution(ids[1][:8]),
            "log tail": lambda: store.get_logs(ids[0], tail=10),
            "task run lines": lambda: store.count_task_run_logs(run_id),
            "running executions": lambda: store.active_leases(lease_s=30),
        }
        for name, read in reads.items():
            plans = _sqlite_plans(store, read)
            assert plans, name
            for plan in plans:
                assert "SCAN executions" not in plan, (name, plan)
                assert "SCAN log_lines" not in plan, (name, plan)
                # no sort of what was read (the few executions a prefix matches may be)
                assert name == "id prefix" or "TEMP B-TREE" not in plan, (name, plan)
            if name == "running executions":  # few: through the state index, not all
                assert all("INDEX ix_executions_state" in p for p in plans), plans
    finally:
        store.close()


def labelled_execution(
    store: Store, *, namespace: str = "team", flow_id: str = "etl", labels: dict[str, str]
) -> str:
    execution_id = uuid.uuid4().hex
    store.create_execution(
        execution_id=execution_id,
        flow_id=flow_id,
        namespace=namespace,
        revision="r",
        source="",
        inputs={},
        labels=labels,
    )
    return execution_id


def test_list_executions_pages_with_a_cursor(store: Store) -> None:
    ids = [new_execution(store) for _ in range(7)]
    newest_first = ids[::-1]
    first = store.list_executions(limit=3)
    assert [r.id for r in first.items] == newest_first[:3]
    assert first.next_cursor is not None
    late = new_execution(store)  # created while paging: does not shift the pages
    second = store.list_executions(after=first.next_cursor, limit=3)
    assert [r.id for r in second.items] == newest_first[3:6]
    assert second.next_cursor is not None
    third = store.list_executions(after=second.next_cursor, limit=3)
    assert [r.id for r in third.items] == newest_first[6:]
    assert third.next_cursor is None
    exact = store.list_executions(after=second.next_cursor, limit=1)
    assert [r.id for r in exact.items] == newest_first[6:] and exact.next_cursor is None
    assert store.list_executions(limit=1).items[0].id == late


def test_list_executions_breaks_ties_of_creation_time_by_id(store: Store) -> None:
    ids = sorted(new_execution(store) for _ in range(5))
    set_created_at(store, ids, T0)
    seen: list[str] = []
    cursor = None
    while True:
        page = store.list_executions(after=cursor, limit=2)
        seen += [r.id for r in page.items]
        cursor = page.next_cursor
        if cursor is None:
            break
    assert seen == ids[::-1]


def test_list_executions_filters(store: Store) -> None:
    nightly = labelled_execution(store, labels={"team": "data", "schedule": "nightly"})
    adhoc = labelled_execution(store, labels={"team": "data", "schedule": "adhoc"})
    other_ns = labelled_execution(store, namespace="ops", labels={"team": "data"})
    other_flow = labelled_execution(store, flow_id="load", labels={"team": "web"})
    dotted = labelled_execution(store, labels={"app.kubernetes.io/name": "x y", "it's": "quoted"})
    store.set_execution_state(adhoc, ExecutionState.FAILED)
    store.set_execution_state(other_flow, ExecutionState.RUNNING)

    def listed(**fields: Any) -> list[str]:
        return [r.id for r in store.list_executions(ExecutionFilter(**fields)).items]

    assert listed(labels={"team": "data"}) == [other_ns, adhoc, nightly]
    assert listed(labels={"team": "data", "schedule": "nightly"}) == [nightly]
    assert listed(labels={"schedule": "weekly"}) == []
    assert listed(labels={"app.kubernetes.io/name": "x y"}) == [dotted]
    assert listed(labels={"it's": "quoted"}) == [dotted]
    assert listed(namespace="ops") == [other_ns]
    assert listed(namespace="team", flow_id="etl", labels={"team": "data"}) == [adhoc, nightly]
    assert listed(states=["failed", ExecutionState.RUNNING]) == [other_flow, adhoc]
    everything = store.list_executions().items
    created = {r.id: r.created_at for r in everything}
    middle = created[other_ns]
    assert listed(created_after=middle) == [dotted, other_flow, other_ns]
    assert listed(created_before=middle) == [adhoc, nightly]
    naive = middle.replace(tzinfo=None)  # taken as UTC
    assert listed(created_after=naive, created_before=created[dotted]) == [other_flow, other_ns]


@pytest.mark.parametrize(
    "cursor",
    ["", "nonsense", "!!!", "MjAyNA", "MjAyNC0wNS0wMVQxMjowMDowMHx4", "a" * 500],
)
def test_a_malformed_cursor_is_a_usage_error(store: Store, cursor: str) -> None:
    new_execution(store)
    with pytest.raises(UsageError, match=r"^invalid cursor '.*': pass the next_cursor") as raised:
        store.list_executions(after=cursor)
    assert len(str(raised.value)) < 200


@pytest.mark.parametrize("limit", [0, -1, 10_001, 10**20, True])
def test_a_limit_out_of_range_is_a_usage_error(store: Store, limit: int) -> None:
    with pytest.raises(UsageError, match="limit must be a whole number from 1 to 10000"):
        store.list_executions(limit=limit)


def test_an_unknown_state_is_a_usage_error(store: Store) -> None:
    with pytest.raises(UsageError, match=r"unknown execution state 'DONE' \(one of CREATED, "):
        store.list_executions(ExecutionFilter(states=["DONE"]))


# -- values ------------------------------------------------------------------------------

ODD_JSON: dict[str, Any] = {
    "text": 'héllo ✓ "quoted" \\ back',
    "int": 3,
    "big": 2**53,
    "float": 1.5,
    "flag": True,
    "nothing": None,
    "list": [1, "two", {"three": [3.0]}],
    "nested": {"a": {"b": []}, "empty": {}},
}


def test_json_values_round_trip(store: Store) -> None:
    execution_id = uuid.uuid4().hex
    store.create_execution(
        execution_id=execution_id,
        flow_id="f",
        namespace="n",
        revision="r",
        source="",
        inputs=ODD_JSON,
        labels={"team": "data", "tier": "1"},
    )
    run_id = store.create_task_run(execution_id=execution_id, task_id="t", attempt=1, image=None)
    store.finish_task_run(run_id, state=TaskState.SUCCESS, outputs=ODD_JSON)
    record = store.get_execution(execution_id)
    assert record.inputs == ODD_JSON
    assert record.labels == {"team": "data", "tier": "1"}
    assert record.task_runs[0].outputs == ODD_JSON


def test_datetimes_come_back_aware_in_utc(store: Store) -> None:
    execution_id = new_execution(store)
    plus_two = datetime(2024, 5, 1, 14, 30, 0, 123456, tzinfo=timezone(timedelta(hours=2)))
    naive = datetime(2024, 5, 1, 13, 0, 0)  # taken as UTC
    run_id = store.create_task_run(execution_id=execution_id, task_id="t", attempt=1, image=None)
    store.task_run_started(run_id, container_id=None, started_at=plus_two)
    store.finish_task_run(run_id, state=TaskState.SUCCESS, ended_at=naive)
    store.append_logs([NewLogLine(execution_id, run_id, "t", "stderr", "x", plus_two)])

    (run,) = store.get_execution(execution_id).task_runs
    assert run.started_at == plus_two
    assert run.started_at is not None and run.started_at.tzinfo is UTC
    assert (run.started_at.hour, run.started_at.microsecond) == (12, 123456)
    assert run.ended_at == naive.replace(tzinfo=UTC)
    assert run.ended_at is not None and run.ended_at.tzinfo is UTC
    assert run.duration_s == pytest.approx(30 * 60 - 0.123456)
    (line,) = store.get_logs(execution_id)
    assert line.time == plus_two and line.time.tzinfo is UTC


# -- logs --------------------------------------------------------------------------------


def test_logs_are_read_back_in_order_and_by_task(store: Store) -> None:
    execution_id = new_execution(store)
    other = new_execution(store)
    a = store.create_task_run(execution_id=execution_id, task_id="a", attempt=1, image=None)
    b = store.create_task_run(execution_id=execution_id, task_id="b", attempt=1, image=None)
    c = store.create_task_run(execution_id=other, task_id="a", attempt=1, image=None)
    store.append_logs([])  # nothing to do
    store.append_logs(
        [
            log_line(execution_id, a, "a", "a1"),
            log_line(execution_id, b, "b", "b1", stream="stderr"),
            log_line(execution_id, a, "a", "a2"),
            log_line(other, c, "a", "elsewhere"),
        ]
    )
    store.append_logs([log_line(execution_id, b, "b", "b2"), log_line(execution_id, a, "a", "")])

    lines = store.get_logs(execution_id)
    assert [(ln.task_id, ln.line) for ln in lines] == [
        ("a", "a1"),
        ("b", "b1"),
        ("a", "a2"),
        ("b", "b2"),
        ("a", ""),
    ]
    assert [ln.id for ln in lines] == sorted(ln.id for ln in lines)
    assert lines[1].stream == "stderr" and lines[1].task_run_id == b
    assert [ln.line for ln in store.get_logs(execution_id, task_id="a")] == ["a1", "a2", ""]
    assert store.count_logs(execution_id) == 5
    assert store.count_logs(other) == 1
    assert store.count_logs("0" * 32) == 0
    assert store.get_logs("0" * 32) == []


def _ten_lines(store: Store) -> tuple[str, int]:
    """An execution whose lines are "0" to "9", the odd ones of task a (its run's id)."""
    execution_id = new_execution(store)
    a = store.create_task_run(execution_id=execution_id, task_id="a", attempt=1, image=None)
    b = store.create_task_run(execution_id=execution_id, task_id="b", attempt=1, image=None)
    store.append_logs(
        [
            log_line(execution_id, a if n % 2 else b, "a" if n % 2 else "b", str(n))
            for n in range(10)
        ]
    )
    return execution_id, a


def test_get_logs_after_a_line_id_with_a_limit(store: Store) -> None:
    execution_id, a = _ten_lines(store)
    every = store.get_logs(execution_id)
    assert [ln.line for ln in every] == [str(n) for n in range(10)]
    # follow the log four lines at a time, as a page polling for new lines does
    seen, last = [], None
    while chunk := store.get_logs(execution_id, after=last, limit=4):
        assert len(chunk) <= 4
        seen += [ln.line for ln in chunk]
        last = chunk[-1].id
    assert seen == [str(n) for n in range(10)]
    assert store.get_logs(execution_id, after=every[-1].id) == []
    store.append_logs([log_line(execution_id, a, "a", "late")])
    assert [ln.line for ln in store.get_logs(execution_id, after=last)] == ["late"]
    only_a = store.get_logs(execution_id, task_id="a", after=every[2].id, limit=2)
    assert [ln.line for ln in only_a] == ["3", "5"]
    assert store.get_logs(execution_id, after=0, limit=1)[0].line == "0"
    data = json.loads(json.dumps(every[0].to_dict()))
    assert data["line"] == "0" and data["id"] == every[0].id
    for bad in ({"after": -1}, {"limit": 0}, {"after": "3"}):
        with pytest.raises(UsageError):
            store.get_logs(execution_id, **bad)  # type: ignore[arg-type]


def test_get_logs_tail_reads_the_last_lines_in_order(store: Store) -> None:
    execution_id, _ = _ten_lines(store)
    assert [ln.line for ln in store.get_logs(execution_id, tail=3)] == ["7", "8", "9"]
    assert [ln.line for ln in store.get_logs(execution_id, task_id="a", tail=2)] == ["7", "9"]
    assert len(store.get_logs(execution_id, tail=1000)) == 10
    every = store.get_logs(execution_id)
    after = store.get_logs(execution_id, after=every[7].id, tail=5)
    assert [ln.line for ln in after] == ["8", "9"]
    assert store.get_logs("0" * 32, tail=5) == []
    for bad in ({"tail": 0}, {"tail": 2, "limit": 2}):
        with pytest.raises(UsageError):
            store.get_logs(execution_id, **bad)  # type: ignore[arg-type]


def test_append_logs_through_core_gives_the_same_rows(
    sql_store: SqlStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQLite normally takes a shortcut past SQLAlchemy's per-row work; the plain Core
    insert (what Postgres uses) must store exactly the same."""
    store = sql_store
    monkeypatch.setattr(store, "_sqlite_log_insert", None)
    execution_id = new_execution(store)
    run_id = store.create_task_run(execution_id=execution_id, task_id="t", attempt=1, image=None)
    plus_one = datetime(2024, 5, 1, 13, 0, 0, 5, tzinfo=timezone(timedelta(hours=1)))
    store.append_logs([NewLogLine(execution_id, run_id, "t", "stderr", "héllo", plus_one)])
    (line,) = store.get_logs(execution_id)
    assert (line.task_run_id, line.task_id, line.stream, line.line) == (
        run_id,
        "t",
        "stderr",
        "héllo",
    )
    assert line.time == plus_one and line.time.tzinfo is UTC


def test_append_logs_stores_a_big_batch_quickly(store: Store) -> None:
    """A regression guard, not the benchmark: one transaction per line would be ~100x slower."""
    execution_id = new_execution(store)
    run_id = store.create_task_run(execution_id=execution_id, task_id="t", attempt=1, image=None)
    lines = [log_line(execution_id, run_id, "t", f"line {i} " + "x" * 60) for i in range(50_000)]
    started = time.process_time()
    store.append_logs(lines)
    cpu_s = time.process_time() - started
    assert store.count_logs(execution_id) == 50_000
    assert 50_000 / cpu_s > 15_000, f"{50_000 / cpu_s:,.0f} lines per CPU second"


ODD_LINES = (
    "",
    "tab\there",
    "back\\slash",
    "\\N",
    "\\.",
    "cr\rinside",
    "new\nline",
    "nul\x00",
    "ünïcødé ✓",
    "x" * 20_000,
)


def test_log_batches_are_stored_line_by_line_in_order(store: Store) -> None:
    """Each line of a batch is a row with the batch's task run, stream and time; the
    characters COPY's text format escapes, and NUL, come back as they went in."""
    execution_id = new_execution(store)
    a = store.create_task_run(execution_id=execution_id, task_id="a", attempt=1, image=None)
    b = store.create_task_run(execution_id=execution_id, task_id="b", attempt=1, image=None)
    plus_two = datetime(2024, 5, 1, 14, 0, 0, 7, tzinfo=timezone(timedelta(hours=2)))
    naive = datetime(2024, 5, 1, 12, 0, 1)
    store.append_log_batches(
        [
            NewLogBatch(execution_id, a, "a", "stdout", T0, ODD_LINES),
            NewLogBatch(execution_id, b, "b", "stderr", plus_two, ("b1", "b2")),
            NewLogBatch(execution_id, a, "a", "stdout", naive, ()),
            NewLogBatch(execution_id, a, "a", "stderr", naive, ("last",)),
        ]
    )
    store.append_log_batches([])
    store.append_logs([log_line(execution_id, b, "b", "one by one")])
    rows = store.get_logs(execution_id)
    assert [(r.task_id, r.stream, r.line) for r in rows] == [
        *[("a", "stdout", line.replace("\x00", "\u2400")) for line in ODD_LINES],
        ("b", "stderr", "b1"),
        ("b", "stderr", "b2"),
        ("a", "stderr", "last"),
        ("b", "stdout", "one by one"),
    ]
    assert [r.time for r in rows[: len(ODD_LINES)]] == [T0] * len(ODD_LINES)
    assert rows[len(ODD_LINES)].time == plus_two and rows[-2].time == naive.replace(tzinfo=UTC)
    ids = [r.id for r in rows]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    middle = store.get_logs(execution_id, after=ids[3], limit=len(ODD_LINES))
    assert [r.id for r in middle] == ids[4 : 4 + len(ODD_LINES)]
    assert store.count_task_run_logs(a) == len(ODD_LINES) + 1


def test_copy_text_escapes_what_copy_reads_specially() -> None:
    when = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
    text = copy_text(
        [
            NewLogBatch("e", 7, "t", "stdout", when, ("a\tb", "c\\d", "\r\n", "", "n\x00")),
            NewLogBatch("e", 7, "t", "stdout", when, ()),
            NewLogBatch("e", 7, "t", "stderr", when.replace(tzinfo=None), ("plain",)),
        ]
    )
    head = "e\t7\tt\t2024-05-01T12:00:00+00:00\t"
    assert text == (
        f"{head}stdout\ta\\tb\n{head}stdout\tc\\\\d\n{head}stdout\t\\r\\n\n"
        f"{head}stdout\t\n{head}stdout\tn\u2400\n{head}stderr\tplain\n"
    )
    assert copy_text([]) == ""


# -- the log writer ----------------------------------------------------------------------


def test_log_writer_keeps_each_tasks_order_across_threads(store: Store) -> None:
    execution_id = new_execution(store)
    tasks = {
        f"task{n}": store.create_task_run(
            execution_id=execution_id, task_id=f"task{n}", attempt=1, image=None
        )
        for n in range(4)
    }
    per_task = 10_000
    start = threading.Barrier(len(tasks))

    def produce(writer: LogWriter, task_id: str) -> None:
        start.wait()
        for i in range(per_task):
            writer.add(log_line(execution_id, tasks[task_id], task_id, f"{task_id} {i}"))

    with LogWriter(store) as writer:
        threads = [threading.Thread(target=produce, args=(writer, t)) for t in tasks]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    assert store.count_logs(execution_id) == per_task * len(tasks)
    for task_id in tasks:
        lines = store.get_logs(execution_id, task_id=task_id)
        assert [ln.line for ln in lines] == [f"{task_id} {i}" for i in range(per_task)]


def test_log_writer_flush_stores_everything_added_so_far(store: Store) -> None:
    execution_id = new_execution(store)
    run_id = store.create_task_run(execution_id=execution_id, task_id="t", attempt=1, image=None)
    writer = LogWriter(store, flush_interval=60)  # only flush() writes here
    try:
        for i in range(7):
            writer.add(log_line(execution_id, run_id, "t", str(i)))
        writer.flush()
        assert store.count_logs(execution_id) == 7
        writer.flush()  # nothing new: returns at once
    finally:
        writer.close()


def test_log_writer_writes_in_the_background(store: Store) -> None:
    execution_id = new_execution(store)
    run_id = store.create_task_run(execution_id=execution_id, task_id="t", attempt=1, image=None)
    with LogWriter(store) as writer:
        writer.add(log_line(execution_id, run_id, "t", "soon"))
        deadline = time.monotonic() + 10
        while store.count_logs(execution_id) == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert store.count_logs(execution_id) == 1


class FlakyStore(InMemoryStore):
    """Its log writes fail (as a locked database does) the first `failures` times, or
    always; it remembers what it stored."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures
        self.calls = 0
        self.stored: list[NewLogLine] = []

    def append_logs(self, lines: Sequence[NewLogLine]) -> None:
        self.calls += 1
        if self.failures < 0 or self.calls <= self.failures:
            raise TransientStoreError(
                "cannot store log lines in sqlite database 'x': database is locked"
            )
        self.stored.extend(lines)


def test_log_writer_retries_a_failed_write_and_keeps_the_order() -> None:
    fake = FlakyStore(failures=2)
    writer = LogWriter(fake)
    writer.add(log_line("e", 1, "t", "first"))
    time.sleep(0.3)  # the first write has failed by now; this line joins the retry
    writer.add(log_line("e", 1, "t", "second"))
    writer.flush()
    writer.close()
    assert [ln.line for ln in fake.stored] == ["first", "second"]
    assert fake.calls == 3


def test_log_writer_gives_up_and_then_raises() -> None:
    fake = FlakyStore(failures=-1)
    writer = LogWriter(fake, give_up_after=0.5)
    writer.add(log_line("e", 1, "t", "lost"))
    with pytest.raises(
        StoreError,
        match=r"gave up storing 1 log lines after 0.5 s of failures: .*database is locked",
    ):
        writer.flush()
    with pytest.raises(StoreError, match="gave up"):
        writer.add(log_line("e", 1, "t", "refused"))
    with pytest.raises(StoreError, match="gave up"):
        writer.close()
    assert fake.stored == []


def test_log_writer_reports_an_unexpected_error_at_once() -> None:
    class BrokenStore(InMemoryStore):
        def append_logs(self, lines: Sequence[NewLogLine]) -> None:
            raise TypeError("not a log line")

    writer = LogWriter(BrokenStore())
    writer.add(log_line("e", 1, "t", "x"))
    with pytest.raises(
        StoreError, match=r"cannot store 1 log lines: TypeError\('not a log line'\)"
    ):
        writer.flush()
    with pytest.raises(StoreError):
        writer.close()


def test_log_writer_refuses_lines_after_close() -> None:
    fake = FlakyStore(failures=0)
    writer = LogWriter(fake)
    writer.add(log_line("e", 1, "t", "kept"))
    writer.close()
    writer.close()
    assert [ln.line for ln in fake.stored] == ["kept"]
    with pytest.raises(StoreError, match="closed"):
        writer.add(log_line("e", 1, "t", "late"))


# -- artifacts ---------------------------------------------------------------------------


def artifact(path: str, size: int = 3, *, root: Path = Path("/arts")) -> Artifact:
    return Artifact(path=path, size=size, sha256=f"{size:064x}", local_path=root / path)


def test_artifacts_are_recorded_and_listed(store: Store) -> None:
    execution_id = new_execution(store)
    other_execution = new_execution(store)
    extract = store.create_task_run(
        execution_id=execution_id, task_id="extract", attempt=1, image=None
    )
    load = store.create_task_run(execution_id=execution_id, task_id="load", attempt=1, image=None)
    elsewhere = store.create_task_run(
        execution_id=other_execution, task_id="extract", attempt=1, image=None
    )
    big = 5 * 1024**3  # past 32 bits
    store.record_artifacts(
        execution_id=execution_id,
        task_run_id=extract,
        task_id="extract",
        artifacts=[artifact("out/b.csv"), artifact("out/a.csv", big)],
    )
    store.record_artifacts(
        execution_id=execution_id, task_run_id=load, task_id="load", artifacts=[artifact("r.txt")]
    )
    store.record_artifacts(
        execution_id=other_execution,
        task_run_id=elsewhere,
        task_id="extract",
        artifacts=[artifact("x.bin")],
    )

    listed = store.list_artifacts(execution_id)
    assert [(a.task_id, a.path) for a in listed] == [
        ("extract", "out/a.csv"),
        ("extract", "out/b.csv"),
        ("load", "r.txt"),
    ]
    first = listed[0]
    assert first == ArtifactRecord(
        id=first.id,
        execution_id=execution_id,
        task_run_id=extract,
        task_id="extract",
        path="out/a.csv",
        size=big,
        sha256=f"{big:064x}",
        local_path="/arts/out/a.csv",
        created_at=first.created_at,
    )
    assert first.created_at.tzinfo is UTC
    assert [a.path for a in store.list_artifacts(execution_id, task_id="load")] == ["r.txt"]
    assert store.list_artifacts(execution_id, task_id="nope") == []
    assert store.list_artifacts("0" * 32) == []

    data = json.loads(json.dumps(first.to_dict()))
    assert data["size"] == big and data["local_path"] == "/arts/out/a.csv"
    assert datetime.fromisoformat(data["created_at"]) == first.created_at
    with pytest.raises(AttributeError):
        first.size = 1  # type: ignore[misc]


def test_recording_artifacts_again_replaces_those_of_the_task_run(store: Store) -> None:
    execution_id = new_execution(store)
    run_id = store.create_task_run(execution_id=execution_id, task_id="t", attempt=1, image=None)
    retry_id = store.create_task_run(execution_id=execution_id, task_id="t", attempt=2, image=None)
    record = {"execution_id": execution_id, "task_id": "t"}
    store.record_artifacts(**record, task_run_id=run_id, artifacts=[artifact("a"), artifact("b")])
    store.record_artifacts(**record, task_run_id=retry_id, artifacts=[artifact("c")])
    store.record_artifacts(**record, task_run_id=run_id, artifacts=[artifact("a", 9)])
    listed = store.list_artifacts(execution_id)
    assert [(a.task_run_id, a.path, a.size) for a in listed] == [
        (retry_id, "c", 3),
        (run_id, "a", 9),
    ]
    store.record_artifacts(**record, task_run_id=run_id, artifacts=[])
    assert [a.path for a in store.list_artifacts(execution_id)] == ["c"]


def test_artifacts_of_an_unknown_task_run_are_a_store_error(store: Store) -> None:
    execution_id = new_execution(store)
    with pytest.raises(StoreError, match=r"cannot record 1 artifacts of task 't' in "):
        store.record_artifacts(
            execution_id=execution_id, task_run_id=999_999, task_id="t", artifacts=[artifact("a")]
        )
    assert store.list_artifacts(execution_id) == []


def test_get_artifact_by_id(store: Store) -> None:
    execution_id = new_execution(store)
    run_id = store.create_task_run(execution_id=execution_id, task_id="t", attempt=1, image=None)
    store.record_artifacts(
        execution_id=execution_id,
        task_run_id=run_id,
        task_id="t",
        artifacts=[artifact("b.txt"), artifact("a.txt")],
    )
    listed = store.list_artifacts(execution_id)
    assert [store.get_artifact(a.id) for a in listed] == listed
    with pytest.raises(NotFoundError, match=r"^no artifact has id 999999$"):
        store.get_artifact(999_999)


# -- migrations --------------------------------------------------------------------------


def _engine_for(url: str) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database:
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    return create_engine(url)


def _migrate_to(engine: Engine, revision: str, *, down: bool = False) -> None:
    config = alembic_config()
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        if down:
            command.downgrade(config, revision)
        else:
            command.upgrade(config, revision)


def test_a_database_at_0001_upgrades_and_keeps_its_data(store_url: str) -> None:
    engine = _engine_for(store_url)
    try:
        _migrate_to(engine, "0001")
        assert "artifacts" not in inspect(engine).get_table_names()
        with engine.begin() as conn:
            conn.execute(
                insert(executions).values(
                    id="e" * 32,
                    flow_id="etl",
                    namespace="team",
                    revision="r",
                    source="id: etl\n",
                    inputs={"day": "2024-05-01"},
                    labels={},
                    state="SUCCESS",
                    created_at=T0,
                    started_at=T0,
                    ended_at=T0 + timedelta(seconds=1),
                )
            )
            run_id = conn.execute(
                insert(task_runs).values(
                    execution_id="e" * 32,
                    task_id="extract",
                    attempt=1,
                    state="SUCCESS",
                    exit_code=0,
                    outputs={"rows": 3, "files": ["a", "b"]},
                    created_at=T0,
                )
            ).inserted_primary_key
            assert run_id is not None
            conn.execute(
                insert(log_lines).values(
                    execution_id="e" * 32,
                    task_run_id=run_id[0],
                    task_id="extract",
                    time=T0,
                    stream="stdout",
                    line="kept",
                )
            )
    finally:
        engine.dispose()

    with SqlStore.open(store_url) as store:
        record = store.get_execution("e" * 32)
        assert record.inputs == {"day": "2024-05-01"}
        assert record.ended_at == T0 + timedelta(seconds=1)
        (run,) = record.task_runs
        assert run.outputs == {"rows": 3, "files": ["a", "b"]}
        assert [ln.line for ln in store.get_logs("e" * 32)] == ["kept"]
        store.record_artifacts(
            execution_id="e" * 32, task_run_id=run.id, task_id="extract", artifacts=[artifact("a")]
        )
        assert [a.path for a in store.list_artifacts("e" * 32)] == ["a"]

    engine = _engine_for(store_url)
    try:
        with engine.connect() as conn:
            assert MigrationContext.configure(conn).get_current_revision() == HEAD_REVISION
        # and back down: the artifacts go, everything else stays
        _migrate_to(engine, "0001", down=True)
        assert "artifacts" not in inspect(engine).get_table_names()
    finally:
        engine.dispose()
    with SqlStore.open(store_url) as store:
        assert store.get_execution("e" * 32).task_runs[0].outputs == {
            "rows": 3,
            "files": ["a", "b"],
        }
        assert store.list_artifacts("e" * 32) == []


def test_a_database_at_0003_gets_the_owners_boot_id(store_url: str) -> None:
    engine = _engine_for(store_url)
    try:
        _migrate_to(engine, "0003")
        with engine.begin() as conn:
            conn.execute(
                insert(executions).values(
                    id="f" * 32,
                    flow_id="etl",
                    namespace="team",
                    revision="r",
                    source="id: etl\n",
                    inputs={},
                    labels={},
                    state="RUNNING",
                    created_at=T0,
                    owner_host="old-host",
                    owner_pid=7,
                    lease_token="7" * 32,
                    heartbeat_at=T0,
                )
            )
    finally:
        engine.dispose()
    with SqlStore.open(store_url) as store:
        (lease,) = store.active_leases("f" * 32, lease_s=30)
        assert (lease.owner_host, lease.owner_pid, lease.owner_boot_id) == ("old-host", 7, None)
        assert lease.expired  # its heartbeat is from 2024
        assert store.take_lease(lease, Owner("new-host", 8, "8" * 32, boot_id="b-8"))
        (taken,) = store.active_leases("f" * 32, lease_s=30)
        assert (taken.owner_host, taken.owner_boot_id, taken.expired) == ("new-host", "b-8", False)
    engine = _engine_for(store_url)
    try:
        _migrate_to(engine, "0003", down=True)
        assert "owner_boot_id" not in {c["name"] for c in inspect(engine).get_columns("executions")}
    finally:
        engine.dispose()


def _same_type(
    ctx: Any, inspected_column: Any, metadata_column: Any, inspected_type: Any, metadata_type: Any
) -> bool | None:
    # UTCDateTime keeps SQLite's DATETIME columns as text on purpose (see models.py).
    if isinstance(metadata_type, UTCDateTime) and isinstance(inspected_type, DateTime):
        return False
    return None


def test_the_migrations_create_what_the_models_declare(store_url: str) -> None:
    SqlStore.open(store_url).close()
    engine = create_engine(store_url)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": _same_type})
            assert compare_metadata(context, Base.metadata) == []
    finally:
        engine.dispose()


# -- many writers ------------------------------------------------------------------------


def _open_and_write(url: str, start: Any, lines: int) -> None:
    """In a child process: open the (maybe fresh) database at the same moment as another
    process, and write an execution with its logs."""
    start.wait()
    with SqlStore.open(url) as store:
        execution_id = new_execution(store, flow_id=f"pid{os.getpid()}")
        store.set_execution_state(execution_id, ExecutionState.RUNNING)
        run_id = store.create_task_run(
            execution_id=execution_id, task_id="t", attempt=1, image=None
        )
        with LogWriter(store) as writer:
            for i in range(lines):
                writer.add(log_line(execution_id, run_id, "t", str(i)))
        store.finish_task_run(run_id, state=TaskState.SUCCESS, exit_code=0)
        store.set_execution_state(execution_id, ExecutionState.SUCCESS)


def test_two_processes_open_a_fresh_database_at_once(store_url: str) -> None:
    spawn = multiprocessing.get_context("spawn")
    start = spawn.Barrier(2)
    children = [
        spawn.Process(target=_open_and_write, args=(store_url, start, 2_000)) for _ in range(2)
    ]
    for child in children:
        child.start()
    for child in children:
        child.join(timeout=120)
    assert [child.exitcode for child in children] == [0, 0]
    with SqlStore.open(store_url) as store:
        records = store.list_executions().items
        assert len(records) == 2
        for record in records:
            assert record.state is ExecutionState.SUCCESS
            assert store.count_logs(record.id) == 2_000


def test_threads_share_one_store(store: Store) -> None:
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(20):
                execution_id = new_execution(store)
                run_id = store.create_task_run(
                    execution_id=execution_id, task_id="t", attempt=1, image=None
                )
                store.append_logs([log_line(execution_id, run_id, "t", "x")] * 10)
                store.set_execution_state(execution_id, ExecutionState.SUCCESS)
                store.list_executions(limit=5)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(store.list_executions(limit=1000).items) == 120


# -- SQLite only -------------------------------------------------------------------------


def test_in_memory_sqlite_works_across_threads() -> None:
    with SqlStore.open("sqlite://") as store:
        execution_id = new_execution(store)
        run_id = store.create_task_run(
            execution_id=execution_id, task_id="t", attempt=1, image=None
        )
        with LogWriter(store) as writer:
            for i in range(100):
                writer.add(log_line(execution_id, run_id, "t", str(i)))
        assert store.count_logs(execution_id) == 100


def test_sqlite_store_uses_wal(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'runner.db'}"
    SqlStore.open(url).close()
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar_one() == "wal"
    finally:
        engine.dispose()


def test_wal_waits_for_another_process_creating_the_database(tmp_path: Path) -> None:
    """Switching a new file to WAL needs it to itself, and SQLite refuses at once (no busy
    wait) while another connection writes the file still in its first journal mode: what
    two processes opening a new database together ran into ("database is locked")."""
    path = tmp_path / "runner.db"
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")
    other.execute("CREATE TABLE creating_the_database (x)")
    release = threading.Timer(0.5, lambda: other.execute("COMMIT"))
    release.start()
    try:
        started = time.monotonic()
        with SqlStore.open(f"sqlite:///{path}") as store:
            assert time.monotonic() - started >= 0.4  # it waited for the other writer
            new_execution(store)
    finally:
        release.join()
        other.close()
    check = sqlite3.connect(path)
    try:
        assert check.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    finally:
        check.close()


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("not a url", "invalid database URL 'not a url': "),
        (
            "nosuchdb://user:secret@host/db",
            "cannot open nosuchdb database 'db' at host: unknown database driver 'nosuchdb'",
        ),
        (
            "postgresql+nosuchdriver://u:secret@h:5432/db",
            "cannot open postgresql database 'db' at h:5432: unknown database driver",
        ),
        ("postgresql://u:secret@h:port/db", "invalid database URL 'postgresql://u:***@h:port/db'"),
    ],
)
def test_bad_urls_give_one_clear_line(url: str, message: str) -> None:
    with pytest.raises(StoreError) as raised:
        SqlStore.open(url)
    text = str(raised.value)
    assert text.startswith(message)
    assert "\n" not in text and "secret" not in text


@pytest.mark.parametrize(
    ("url", "described"),
    [
        (
            "postgresql+psycopg://u:p@db.example:6543/runner",
            "postgresql database 'runner' at db.example:6543",
        ),
        ("postgresql+psycopg://u:p@/runner", "postgresql database 'runner' at localhost:5432"),
        # libpq takes host and port from the query too, and they win: so must the message
        (
            "postgresql+psycopg://u:p@/runner?host=127.0.0.1&port=1",
            "postgresql database 'runner' at 127.0.0.1:1",
        ),
        (
            "postgresql+psycopg://u:p@h:5432/runner?host=/run/postgresql",
            "postgresql database 'runner' at the socket in /run/postgresql (port 5432)",
        ),
        ("sqlite:////tmp/x/runner.db", "sqlite database '/tmp/x/runner.db'"),
        ("sqlite://", "sqlite database ':memory:'"),
    ],
)
def test_a_database_is_named_where_the_driver_connects(url: str, described: str) -> None:
    assert describe(make_url(url)) == described


def test_unusable_sqlite_path_gives_one_clear_line(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(StoreError) as raised:
        SqlStore.open(f"sqlite:///{blocker / 'runner.db'}")
    text = str(raised.value)
    assert text.startswith(f"cannot open sqlite database '{blocker / 'runner.db'}': ")
    assert "\n" not in text


def test_a_file_that_is_not_a_database_gives_one_clear_line(tmp_path: Path) -> None:
    path = tmp_path / "runner.db"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(
        StoreError, match=r"^cannot .*sqlite database '.*runner\.db'.*not a database"
    ) as raised:
        SqlStore.open(f"sqlite:///{path}")
    assert "\n" not in str(raised.value)


def test_default_database_url(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RUNNER_DATABASE_URL", raising=False)
    assert default_database_url() == f"sqlite:///{tmp_path / '.runner' / 'runner.db'}"
    monkeypatch.setenv("RUNNER_DATABASE_URL", "postgresql+psycopg://u@h/db")
    assert default_database_url() == "postgresql+psycopg://u@h/db"


def test_records_are_frozen() -> None:
    record = ExecutionRecord(
        id="e",
        flow_id="f",
        namespace="n",
        revision="r",
        inputs={},
        labels={},
        state=ExecutionState.CREATED,
        error=None,
        created_at=T0,
        started_at=None,
        ended_at=None,
        task_runs=(),
    )
    with pytest.raises(AttributeError):
        record.state = ExecutionState.RUNNING  # type: ignore[misc]
    line = log_line("e", 1, "t", "x")
    with pytest.raises(AttributeError):
        line.line = "y"  # type: ignore[misc]


# -- leases, kill requests and flow concurrency ------------------------------------------


def leased(store: Store, owner: Owner, *, flow_id: str = "etl") -> str:
    execution_id = uuid.uuid4().hex
    store.create_execution(
        execution_id=execution_id,
        flow_id=flow_id,
        namespace="team",
        revision="r",
        source="id: etl\n",
        inputs={},
        labels={},
        owner=owner,
        flow_path="/flows/etl.yml",
    )
    return execution_id


def test_heartbeat_reports_a_kill_request_and_a_lost_lease(store: Store) -> None:
    owner, thief = Owner("host-a", 1, "a" * 32), Owner("host-b", 2, "b" * 32)
    execution_id = leased(store, owner)
    assert store.execution_flow_path(execution_id) == "/flows/etl.yml"
    assert store.heartbeat(execution_id, owner.token) is Beat.KEPT
    assert store.request_kill(execution_id) is ExecutionState.CREATED
    assert store.active_leases(execution_id, lease_s=30)[0].kill_requested
    assert store.heartbeat(execution_id, owner.token) is Beat.KILL
    (lease,) = store.active_leases(execution_id, lease_s=30)
    assert (lease.owner_host, lease.owner_pid, lease.kill_requested) == ("host-a", 1, True)
    assert not lease.expired
    assert store.take_lease(lease, thief)
    assert store.heartbeat(execution_id, owner.token) is Beat.LOST
    # a second taker holding the same (now stale) view of the lease loses the race
    assert not store.take_lease(lease, Owner("host-c", 3, "c" * 32))
    store.set_execution_state(execution_id, ExecutionState.KILLED)
    assert store.active_leases(execution_id, lease_s=30) == []
    assert store.request_kill(execution_id) is ExecutionState.KILLED


def test_a_lease_expires_by_the_stores_clock(store: Store) -> None:
    execution_id = leased(store, Owner("elsewhere", 1, "1" * 32))
    (fresh,) = store.active_leases(execution_id, lease_s=30)
    assert not fresh.expired
    backdate_heartbeat(store, execution_id, 29)
    assert not store.active_leases(execution_id, lease_s=30)[0].expired
    backdate_heartbeat(store, execution_id, 2)
    (stale,) = store.active_leases(execution_id, lease_s=30)
    assert stale.expired
    assert not store.active_leases(execution_id, lease_s=60)[0].expired
    assert store.heartbeat(execution_id, "1" * 32) is Beat.KEPT  # renewed: fresh again
    assert not store.active_leases(execution_id, lease_s=30)[0].expired
    never = new_execution(store)  # no owner: no heartbeat at all
    assert store.active_leases(never, lease_s=30)[0].expired


def test_a_lease_of_a_dead_pid_expires_only_on_the_same_boot() -> None:
    now = datetime.now(UTC)
    base = Lease("x", "RUNNING", "elsewhere", 1, "t", now, owner_boot_id="boot-1")
    here = {"host": "here", "boot_id": "boot-1"}
    assert not is_expired(base, **here)
    assert is_expired(replace(base, expired=True), **here)
    assert is_expired(replace(base, heartbeat_at=None), **here)
    child = multiprocessing.get_context("spawn").Process(target=time.sleep, args=(0,))
    child.start()
    child.join()
    dead = replace(base, owner_host="here", owner_pid=child.pid)
    assert is_expired(dead, **here)
    # same host name, another boot (or a container with --uts=host): its pids are not ours
    assert not is_expired(dead, host="here", boot_id="boot-2")
    assert not is_expired(replace(dead, owner_boot_id=None), **here)
    alive = replace(base, owner_host="here", owner_pid=os.getpid())
    assert not is_expired(alive, **here)


def test_try_start_keeps_to_the_limit_in_arrival_order(store: Store) -> None:
    owners = [Owner("h", n, uuid.uuid4().hex) for n in range(4)]
    ids = [leased(store, owner) for owner in owners]
    other_flow = leased(store, Owner("h", 9, "9" * 32), flow_id="other")
    start = {"namespace": "team", "flow_id": "etl", "limit": 2, "lease_s": 30.0}
    assert store.try_start(ids[0], **start) == []
    for execution_id in ids[2:]:
        # queue them (the order is their creation order)
        store.set_execution_state(execution_id, ExecutionState.QUEUED)
    assert store.try_start(ids[3], **start) == [ids[0]]  # ids[2] is ahead of it
    assert store.try_start(ids[2], **start) == []
    assert store.try_start(ids[3], **start) == [ids[0], ids[2]]
    assert store.try_start(other_flow, **{**start, "flow_id": "other", "limit": 1}) == []
    store.set_execution_state(ids[0], ExecutionState.SUCCESS)
    assert store.try_start(ids[3], **start) == []
    assert store.get_execution(ids[3]).state is ExecutionState.RUNNING


def test_an_expired_running_execution_does_not_hold_a_slot(store: Store) -> None:
    stale = leased(store, Owner("h", 1, "1" * 32))
    start = {"namespace": "team", "flow_id": "etl", "limit": 1, "lease_s": 30.0}
    assert store.try_start(stale, **start) == []
    backdate_heartbeat(store, stale, 60)  # its runner stopped renewing a minute ago
    fresh = leased(store, Owner("h", 2, "2" * 32))
    assert store.try_start(fresh, **start) == []


def test_reopen_only_a_failed_or_killed_execution(store: Store) -> None:
    owner = Owner("h", 1, "1" * 32)
    execution_id = leased(store, owner)
    with pytest.raises(UsageError, match="only a FAILED or KILLED"):
        store.reopen_execution(execution_id, owner)
    store.set_execution_state(execution_id, ExecutionState.FAILED, error="boom")
    store.request_kill(execution_id)  # too late: nothing happens
    store.reopen_execution(execution_id, Owner("h", 2, "2" * 32))
    record = store.get_execution(execution_id)
    assert (record.state, record.error, record.ended_at) == (ExecutionState.CREATED, None, None)
    assert store.heartbeat(execution_id, "2" * 32) is Beat.KEPT


def test_count_task_run_logs_and_execution_states(store: Store) -> None:
    execution_id = new_execution(store)
    run_id = store.create_task_run(execution_id=execution_id, task_id="a", attempt=1, image="i")
    other = store.create_task_run(execution_id=execution_id, task_id="b", attempt=1, image="i")
    store.append_logs(
        [NewLogLine(execution_id, run_id, "a", "stdout", f"l{n}", T0) for n in range(7)]
        + [NewLogLine(execution_id, other, "b", "stdout", "b", T0)]
    )
    assert store.count_task_run_logs(run_id) == 7
    assert store.count_task_run_logs(other) == 1
    assert store.count_task_run_logs(other + 1000) == 0
    store.set_execution_state(execution_id, ExecutionState.SUCCESS)
    assert store.execution_states([execution_id, "nope"]) == {execution_id: ExecutionState.SUCCESS}


# -- what containers print cannot break the store ---------------------------------------------


def test_nul_in_task_output_is_stored_visibly(store: Store) -> None:
    """Postgres refuses NUL in text and JSONB ("cannot contain NUL"): every store keeps
    the line, the NUL shown as U+2400."""
    execution_id = new_execution(store)
    run_id = store.create_task_run(execution_id=execution_id, task_id="t", attempt=1, image=None)
    store.append_logs([log_line(execution_id, run_id, "t", "a\x00b\x00")])
    with LogWriter(store, give_up_after=5) as writer:
        writer.add(log_line(execution_id, run_id, "t", "\x00through the writer"))
    store.finish_task_run(
        run_id,
        state=TaskState.FAILED,
        error="exited\x00",
        outputs={"k\x00": ["v\x00", {"deep\x00": "x\x00"}]},
    )
    store.record_skipped(execution_id=execution_id, task_id="u", reason="because\x00")
    store.set_execution_state(execution_id, ExecutionState.FAILED, error="boom\x00")
    lines = [ln.line for ln in store.get_logs(execution_id)]
    assert lines == ["a\u2400b\u2400", "\u2400through the writer"]
    record = store.get_execution(execution_id)
    run, skipped = record.task_runs
    assert run.error == "exited\u2400" and skipped.error == "because\u2400"
    assert run.outputs == {"k\u2400": ["v\u2400", {"deep\u2400": "x\u2400"}]}
    assert record.error == "boom\u2400"


@pytest.mark.parametrize("number", [float("inf"), float("-inf"), float("nan")])
def test_numbers_that_are_not_finite_are_refused(store: Store, number: float) -> None:
    """JSON has no Infinity or NaN: Postgres refuses them, SQLite would store `Infinity`
    and `runner show --json` would print something that is not JSON."""
    execution_id = new_execution(store)
    run_id = store.create_task_run(execution_id=execution_id, task_id="t", attempt=1, image=None)
    with pytest.raises(
        StoreError,
        match=rf"^the outputs of task run {run_id} hold a number that is not finite \({number}\) at n\[1\]\.x$",
    ):
        store.finish_task_run(run_id, state=TaskState.SUCCESS, outputs={"n": [1, {"x": number}]})
    (run,) = store.get_execution(execution_id).task_runs
    assert run.state is TaskState.CREATED and run.outputs is None
    with pytest.raises(StoreError, match="the inputs of execution 'e1' hold a number that is not"):
        store.create_execution(
            execution_id="e1",
            flow_id="f",
            namespace="n",
            revision="r",
            source="",
            inputs={"x": number},
            labels={},
        )
    with pytest.raises(NotFoundError):
        store.get_execution("e1")
    json.dumps(store.get_execution(execution_id).to_dict(), allow_nan=False)


def test_a_line_the_store_refuses_fails_the_writer_at_once(store: Store) -> None:
    """A permanent error (here a task run that does not exist) is not retried for the
    outage limit: the lines before it are stored, and the error names the task and the
    line's number."""
    execution_id = new_execution(store)
    run_id = store.create_task_run(execution_id=execution_id, task_id="t", attempt=1, image=None)
    writer = LogWriter(store, give_up_after=60, flush_interval=60)
    for n in range(3):
        writer.add(log_line(execution_id, run_id, "t", f"good {n}"))
    writer.flush()
    for n in range(3, 6):
        writer.add(log_line(execution_id, run_id, "t", f"good {n}"))
    writer.add(log_line(execution_id, 999_999, "ghost", "refused"))
    writer.add(log_line(execution_id, run_id, "t", "after"))
    started = time.monotonic()
    with pytest.raises(StoreError) as raised:
        writer.flush()
    assert time.monotonic() - started < 10  # not the 60 s of an outage
    message = str(raised.value)
    assert message.startswith(
        f"line 1 of task 'ghost' (execution {execution_id}) cannot be stored, so its output"
        " ends before it (2 lines lost): cannot store 1 log lines in "
    )
    assert "\n" not in message
    with pytest.raises(StoreError, match="line 1 of task 'ghost'"):
        writer.close()
    assert [ln.line for ln in store.get_logs(execution_id)] == [f"good {n}" for n in range(6)]


def test_a_line_the_store_refuses_inside_a_batch_is_found(store: Store) -> None:
    """Batches are split into lines to find the one refused: those before it are stored."""
    execution_id = new_execution(store)
    run_id = store.create_task_run(execution_id=execution_id, task_id="t", attempt=1, image=None)
    writer = LogWriter(store, give_up_after=60, flush_interval=60)
    writer.add_batch(NewLogBatch(execution_id, run_id, "t", "stdout", T0, ("g0", "g1")))
    writer.add_batch(NewLogBatch(execution_id, 999_999, "ghost", "stdout", T0, ("r0", "r1")))
    writer.add_batch(NewLogBatch(execution_id, run_id, "t", "stdout", T0, ("after",)))
    with pytest.raises(StoreError) as raised:
        writer.flush()
    assert str(raised.value).startswith(
        f"line 1 of task 'ghost' (execution {execution_id}) cannot be stored, so its output"
        " ends before it (3 lines lost): "
    )
    with pytest.raises(StoreError):
        writer.close()
    assert [ln.line for ln in store.get_logs(execution_id)] == ["g0", "g1"]


def test_log_writer_counts_the_lines_of_batches(store: Store) -> None:
    execution_id = new_execution(store)
    run_id = store.create_task_run(execution_id=execution_id, task_id="t", attempt=1, image=None)
    writer = LogWriter(store, flush_interval=60, batch_size=5)
    writer.add_batch(NewLogBatch(execution_id, run_id, "t", "stdout", T0, ()))
    for n in range(4):
        writer.add_batch(
            NewLogBatch(execution_id, run_id, "t", "stdout", T0, (f"{n}a", f"{n}b", f"{n}c"))
        )
        writer.add(log_line(execution_id, run_id, "t", f"{n}d"))
    writer.flush()
    lines = [ln.line for ln in store.get_logs(execution_id)]
    assert lines == [f"{n}{x}" for n in range(4) for x in "abcd"]
    writer.close()


def test_heartbeats_use_the_databases_clock(
    sql_store: SqlStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A runner whose own clock is 45 s ahead (here: the store's idea of now) still stamps
    its heartbeat with the database's time, and the lease is judged by it."""
    import runner.store.sql

    ahead = datetime.now(UTC) + timedelta(seconds=45)
    monkeypatch.setattr(runner.store.sql, "_utcnow", lambda: ahead)
    execution_id = leased(sql_store, Owner("h", 1, "1" * 32))
    first = sql_store.active_leases(execution_id, lease_s=30)[0].heartbeat_at
    time.sleep(0.05)
    assert sql_store.heartbeat(execution_id, "1" * 32) is Beat.KEPT
    (lease,) = sql_store.active_leases(execution_id, lease_s=30)
    assert lease.heartbeat_at is not None and first is not None
    with sql_store._engine.connect() as conn:
        database_now = _database_now(conn)
    assert abs((lease.heartbeat_at - database_now).total_seconds()) < 5
    assert lease.heartbeat_at > first  # sub-second precision: two beats 50 ms apart differ
    assert lease.heartbeat_at.tzinfo is UTC
    assert not lease.expired


def _database_now(conn: Any) -> datetime:
    if conn.dialect.name == "sqlite":
        text = conn.exec_driver_sql("SELECT strftime('%Y-%m-%d %H:%M:%f', 'now')").scalar_one()
        return datetime.fromisoformat(text).replace(tzinfo=UTC)
    value = conn.exec_driver_sql("SELECT now()").scalar_one()
    assert isinstance(value, datetime)
    return value.astimezone(UTC)


@pytest.mark.parametrize(
    ("error", "transient"),
    [
        # the connection: lost, refused, or the server going down / starting up
        (psycopg.OperationalError("server closed the connection unexpectedly"), True),
        (psycopg.errors.AdminShutdown("terminating connection"), True),
        (psycopg.errors.CannotConnectNow("the database system is starting up"), True),
        (psycopg.errors.TooManyConnections("too many clients"), True),
        (psycopg.errors.DiskFull("could not extend file"), True),
        # a transaction rolled back by the server, fine on a new try
        (psycopg.errors.SerializationFailure("could not serialize access"), True),
        (psycopg.errors.DeadlockDetected("deadlock detected"), True),
        (psycopg.errors.LockNotAvailable("could not obtain lock"), True),
        # the same every time: an OperationalError class that is no outage, bad data, keys
        (psycopg.errors.ProgramLimitExceeded("index row size exceeds maximum"), False),
        (psycopg.errors.StringDataRightTruncation("value too long"), False),
        (psycopg.errors.UniqueViolation("duplicate key"), False),
        (psycopg.DataError("PostgreSQL text fields cannot contain NUL (0x00) bytes"), False),
        (sqlite3.OperationalError("database is locked"), True),
        (sqlite3.OperationalError("no such table: executions"), False),
        (sqlite3.IntegrityError("FOREIGN KEY constraint failed"), False),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, Exception) else str(value),
)
def test_only_outages_are_retried(error: Exception, transient: bool) -> None:
    base = psycopg.Error if isinstance(error, psycopg.Error) else sqlite3.Error
    wrapped = sa_exc.DBAPIError.instance("SELECT 1", None, error, base)
    assert is_transient(wrapped) is transient
