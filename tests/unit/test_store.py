"""The store's contract, run on SQLite and (with the `postgres` marker) on PostgreSQL.

Every test that takes `store` or `store_url` runs once per database: SQLite in a fresh
folder under tmp_path, and Postgres in a freshly created database (RUNNER_TEST_POSTGRES_URL,
skipped locally when unset or unreachable, a failure in CI). Postgres-only behaviour
(server errors such as a wrong password) is in tests/integration/test_store_postgres.py.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, cast

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import DateTime, Engine, create_engine, event, insert, inspect, make_url
from sqlalchemy.engine.interfaces import DBAPICursor

from runner.archives import Artifact
from runner.errors import NotFoundError, StoreError, UsageError
from runner.execution import ExecutionState, TaskState
from runner.lease import Beat, Lease, Owner, is_expired
from runner.store import (
    ArtifactRecord,
    ExecutionRecord,
    LogWriter,
    NewLogLine,
    Store,
    TaskRunRecord,
    default_database_url,
)
from runner.store.models import Base, UTCDateTime, executions, log_lines, task_runs
from runner.store.store import alembic_config
from runner.store.testing import temporary_postgres_database

T0 = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
HEAD_REVISION = "0004"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A URL of an empty database: a SQLite file whose folder does not exist yet, or a
    new Postgres database dropped after the test."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'nested' / '.runner' / 'runner.db'}"
        return
    server = request.getfixturevalue("postgres_server_url")
    with temporary_postgres_database(server) as url:
        yield url


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    opened = Store.open(store_url)
    yield opened
    opened.close()


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
    Store.open(store_url).close()
    engine = create_engine(store_url)
    try:
        tables = set(inspect(engine).get_table_names())
        with engine.connect() as conn:
            revision = conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar_one()
    finally:
        engine.dispose()
    assert {"executions", "task_runs", "log_lines", "artifacts", "alembic_version"} <= tables
    assert revision == HEAD_REVISION


def test_open_again_keeps_the_data(store_url: str) -> None:
    with Store.open(store_url) as store:
        execution_id = new_execution(store)
    with Store.open(store_url) as store:
        assert store.get_execution(execution_id).id == execution_id


def test_a_database_from_a_newer_runner_is_refused(store_url: str) -> None:
    Store.open(store_url).close()
    engine = create_engine(store_url)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql("UPDATE alembic_version SET version_num = '9999'")
    finally:
        engine.dispose()
    with pytest.raises(
        StoreError, match="has schema revision '9999', which this version of runner does not know"
    ):
        Store.open(store_url)


def test_url_hides_the_password(store: Store, store_url: str) -> None:
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

    everything = store.list_executions()
    assert [r.id for r in everything] == ids[::-1]
    assert [r.id for r in store.list_executions(flow_id="a")] == [ids[4], ids[2], ids[0]]
    assert [r.id for r in store.list_executions(state="SUCCESS")] == [ids[4], ids[0]]
    assert [r.id for r in store.list_executions(state="success", flow_id="b")] == []
    assert [r.id for r in store.list_executions(state=ExecutionState.CREATED)] == [
        ids[3],
        ids[2],
        ids[1],
    ]
    assert [r.id for r in store.list_executions(limit=2)] == [ids[4], ids[3]]
    assert [t.task_id for t in everything[0].task_runs] == ["t", "u"]
    assert all(r.task_runs == () for r in everything[1:])
    assert store.list_executions(flow_id="nothing") == []


def test_list_executions_reads_task_runs_in_one_query(store: Store) -> None:
    for _ in range(5):
        execution_id = new_execution(store)
        store.create_task_run(execution_id=execution_id, task_id="t", attempt=1, image=None)
    selects: list[str] = []

    def count(
        conn: Any,
        cursor: DBAPICursor,
        statement: str,
        parameters: Any,
        context: Any,
        executemany: bool,
    ) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            selects.append(statement)

    event.listen(Engine, "before_cursor_execute", count)
    try:
        records = store.list_executions()
    finally:
        event.remove(Engine, "before_cursor_execute", count)
    assert len(records) == 5 and all(len(r.task_runs) == 1 for r in records)
    assert len(selects) == 2, selects


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


def test_append_logs_through_core_gives_the_same_rows(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQLite normally takes a shortcut past SQLAlchemy's per-row work; the plain Core
    insert (what Postgres uses) must store exactly the same."""
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


class FlakyStore:
    """Fails the first `failures` writes (or all of them), remembering what it stored."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls = 0
        self.stored: list[NewLogLine] = []

    def append_logs(self, lines: list[NewLogLine]) -> None:
        self.calls += 1
        if self.failures < 0 or self.calls <= self.failures:
            raise StoreError("cannot store log lines in sqlite database 'x': database is locked")
        self.stored.extend(lines)


def test_log_writer_retries_a_failed_write_and_keeps_the_order() -> None:
    fake = FlakyStore(failures=2)
    writer = LogWriter(cast(Store, fake))
    writer.add(log_line("e", 1, "t", "first"))
    time.sleep(0.3)  # the first write has failed by now; this line joins the retry
    writer.add(log_line("e", 1, "t", "second"))
    writer.flush()
    writer.close()
    assert [ln.line for ln in fake.stored] == ["first", "second"]
    assert fake.calls == 3


def test_log_writer_gives_up_and_then_raises() -> None:
    fake = FlakyStore(failures=-1)
    writer = LogWriter(cast(Store, fake), give_up_after=0.5)
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
    class BrokenStore:
        def append_logs(self, lines: list[NewLogLine]) -> None:
            raise TypeError("not a log line")

    writer = LogWriter(cast(Store, BrokenStore()))
    writer.add(log_line("e", 1, "t", "x"))
    with pytest.raises(
        StoreError, match=r"cannot store 1 log lines: TypeError\('not a log line'\)"
    ):
        writer.flush()
    with pytest.raises(StoreError):
        writer.close()


def test_log_writer_refuses_lines_after_close() -> None:
    fake = FlakyStore(failures=0)
    writer = LogWriter(cast(Store, fake))
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

    with Store.open(store_url) as store:
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
    with Store.open(store_url) as store:
        assert store.get_execution("e" * 32).task_runs[0].outputs == {
            "rows": 3,
            "files": ["a", "b"],
        }
        assert store.list_artifacts("e" * 32) == []


def _same_type(
    ctx: Any, inspected_column: Any, metadata_column: Any, inspected_type: Any, metadata_type: Any
) -> bool | None:
    # UTCDateTime keeps SQLite's DATETIME columns as text on purpose (see models.py).
    if isinstance(metadata_type, UTCDateTime) and isinstance(inspected_type, DateTime):
        return False
    return None


def test_the_migrations_create_what_the_models_declare(store_url: str) -> None:
    Store.open(store_url).close()
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
    with Store.open(url) as store:
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
    with Store.open(store_url) as store:
        records = store.list_executions()
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
    assert len(store.list_executions(limit=1000)) == 120


# -- SQLite only -------------------------------------------------------------------------


def test_in_memory_sqlite_works_across_threads() -> None:
    with Store.open("sqlite://") as store:
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
    Store.open(url).close()
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar_one() == "wal"
    finally:
        engine.dispose()


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
        Store.open(url)
    text = str(raised.value)
    assert text.startswith(message)
    assert "\n" not in text and "secret" not in text


def test_unusable_sqlite_path_gives_one_clear_line(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(StoreError) as raised:
        Store.open(f"sqlite:///{blocker / 'runner.db'}")
    text = str(raised.value)
    assert text.startswith(f"cannot open sqlite database '{blocker / 'runner.db'}': ")
    assert "\n" not in text


def test_a_file_that_is_not_a_database_gives_one_clear_line(tmp_path: Path) -> None:
    path = tmp_path / "runner.db"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(
        StoreError, match=r"^cannot .*sqlite database '.*runner\.db'.*not a database"
    ) as raised:
        Store.open(f"sqlite:///{path}")
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
    assert store.active_leases(execution_id)[0].kill_requested
    assert store.heartbeat(execution_id, owner.token) is Beat.KILL
    (lease,) = store.active_leases(execution_id)
    assert (lease.owner_host, lease.owner_pid, lease.kill_requested) == ("host-a", 1, True)
    assert store.take_lease(lease, thief)
    assert store.heartbeat(execution_id, owner.token) is Beat.LOST
    # a second taker holding the same (now stale) view of the lease loses the race
    assert not store.take_lease(lease, Owner("host-c", 3, "c" * 32))
    store.set_execution_state(execution_id, ExecutionState.KILLED)
    assert store.active_leases(execution_id) == []
    assert store.request_kill(execution_id) is ExecutionState.KILLED


def test_a_lease_expires_without_heartbeat_or_with_a_dead_pid(store: Store) -> None:
    now = datetime.now(UTC)
    base = Lease("x", "RUNNING", "elsewhere", 1, "t", now)
    assert not is_expired(base, now + timedelta(seconds=29), host="here", lease_s=30)
    assert is_expired(base, now + timedelta(seconds=31), host="here", lease_s=30)
    assert is_expired(replace(base, heartbeat_at=None), now, host="here", lease_s=30)
    child = multiprocessing.get_context("spawn").Process(target=time.sleep, args=(0,))
    child.start()
    child.join()
    dead = replace(base, owner_host="here", owner_pid=child.pid)
    assert is_expired(dead, now, host="here", lease_s=30)
    alive = replace(base, owner_host="here", owner_pid=os.getpid())
    assert not is_expired(alive, now, host="here", lease_s=30)


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
    with store._engine.begin() as conn:  # its runner stopped renewing a minute ago
        conn.execute(
            executions.update()
            .where(executions.c.id == stale)
            .values(heartbeat_at=datetime.now(UTC) - timedelta(minutes=1))
        )
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
    store.append_logs(
        [NewLogLine(execution_id, run_id, "a", "stdout", f"l{n}", T0) for n in range(7)]
    )
    assert store.count_task_run_logs(run_id) == 7
    store.set_execution_state(execution_id, ExecutionState.SUCCESS)
    assert store.execution_states([execution_id, "nope"]) == {execution_id: ExecutionState.SUCCESS}
