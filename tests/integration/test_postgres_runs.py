"""Runs against PostgreSQL: many runner processes at once, a server that restarts or goes
away mid-run, `runner db`, and connection errors as one line.

The shared server is RUNNER_TEST_POSTGRES_URL (a user with CREATEDB; each test gets its
own database). The outage tests start their own server, a container of the test image
`runner-test/postgres:15` (built from images/postgres when missing; see test_compose.py)
published on a free port of 127.0.0.1, so restarting or stopping it disturbs nobody.
Skipped locally when Docker or Postgres is missing, a failure under CI=true.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy import create_engine, make_url
from sqlalchemy import exc as sa_exc

from runner import api
from runner.errors import StoreError
from runner.execution import ExecutionState, TaskState
from runner.store import LogWriter, NewLogLine, Store, StoreUnavailableError, open_store
from tests.conftest import BASE_IMAGE
from tests.integration.helpers import Cli, execution_id_of, labelled, write_flow
from tests.integration.test_compose import POSTGRES_IMAGE_DIR, TEST_POSTGRES_IMAGE, free_port

pytestmark = pytest.mark.postgres

READY_TIMEOUT_S = 60.0
FANOUT_TASKS, FANOUT_LINES, CONCURRENT_RUNS = 4, 1000, 8


# -- servers and databases ---------------------------------------------------------------


@pytest.fixture
def server_url(postgres_server_url: str) -> str:
    return postgres_server_url


@pytest.fixture
def database_url(postgres_database_url: str) -> str:
    return postgres_database_url


@dataclass
class OwnPostgres:
    """A Postgres server in a container of its own, to restart or stop at will."""

    container: Any
    port: int
    url: str

    def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> float:
        """Wait until the server takes connections; returns the seconds it took."""
        started = time.monotonic()
        while True:
            try:
                with psycopg.connect(
                    make_url(self.url).set(drivername="postgresql").render_as_string(False),
                    connect_timeout=2,
                ) as conn:
                    conn.execute("SELECT 1")
                return time.monotonic() - started
            except psycopg.Error as exc:
                if time.monotonic() - started > timeout:
                    self.container.reload()
                    logs = self.container.logs(tail=30).decode(errors="replace")
                    pytest.fail(
                        f"postgres on port {self.port} is not ready after {timeout:.0f} s"
                        f" ({self.container.status}): {exc}\n{logs}",
                        pytrace=False,
                    )
                time.sleep(0.2)


@pytest.fixture(scope="module")
def postgres_image(docker_client: Any) -> str:
    """RUNNER_TEST_POSTGRES_IMAGE, else runner-test/postgres:15 (built if missing)."""
    given = os.environ.get("RUNNER_TEST_POSTGRES_IMAGE")
    if given:
        return given
    from docker.errors import BuildError, ImageNotFound

    try:
        docker_client.images.get(TEST_POSTGRES_IMAGE)
    except ImageNotFound:
        try:
            docker_client.images.build(
                path=str(POSTGRES_IMAGE_DIR), tag=TEST_POSTGRES_IMAGE, rm=True
            )
        except BuildError as exc:
            pytest.fail(f"cannot build {TEST_POSTGRES_IMAGE}: {exc}", pytrace=False)
    return TEST_POSTGRES_IMAGE


@pytest.fixture
def own_postgres(docker_client: Any, postgres_image: str) -> Iterator[OwnPostgres]:
    port = free_port()
    password = uuid.uuid4().hex
    container = docker_client.containers.run(
        postgres_image,
        detach=True,
        name=f"runner-test-pg-{uuid.uuid4().hex[:10]}",
        environment={
            "POSTGRES_USER": "runner",
            "POSTGRES_PASSWORD": password,
            "POSTGRES_DB": "runner",
        },
        ports={"5432/tcp": ("127.0.0.1", port)},
        labels={"io.runner.test": "test_postgres_runs"},
    )
    try:
        server = OwnPostgres(
            container, port, f"postgresql+psycopg://runner:{password}@127.0.0.1:{port}/runner"
        )
        server.wait_ready()
        yield server
    finally:
        container.remove(force=True, v=True)


# -- running the CLI -----------------------------------------------------------------------


@dataclass
class Running:
    """A `python -m runner` started in the background, its output going to files (task
    output reaches stderr; a pipe nobody reads would stall the run)."""

    process: subprocess.Popen[bytes]
    stdout: Path
    stderr: Path

    def wait(self, timeout: float) -> tuple[int, str, str]:
        code = self.process.wait(timeout=timeout)
        return code, self.stdout.read_text(), self.stderr.read_text()

    def stop(self, docker_client: Any) -> None:
        """Kill the runner if a failed test left it running, and what it started."""
        if self.process.poll() is not None:
            return
        self.process.kill()
        self.process.wait()
        text = self.stdout.read_text()
        if text.startswith("execution "):
            containers, volumes = labelled(docker_client, execution_id_of(text))
            for leftover in [*containers, *volumes]:
                leftover.remove(force=True)

    def execution_id(self, timeout: float = 60) -> str:
        """The id the run prints first, as soon as it is recorded."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.stdout.read_text()
            if "\n" in text:
                return execution_id_of(text)
            if self.process.poll() is not None:
                break
            time.sleep(0.1)
        pytest.fail(f"no execution id printed: {self.stdout.read_text()}{self.stderr.read_text()}")


def start_runner(
    cwd: Path, db_url: str, *args: str, env: dict[str, str] | None = None, name: str = "run"
) -> Running:
    environment = Cli(cwd=cwd, db_url=db_url).env()
    environment.update(env or {})
    stdout, stderr = cwd / f"{name}.stdout", cwd / f"{name}.stderr"
    with stdout.open("wb") as out, stderr.open("wb") as err:
        process = subprocess.Popen(
            [sys.executable, "-m", "runner", *args],
            cwd=cwd,
            env=environment,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
        )
    return Running(process, stdout, stderr)


def printing_flow(directory: Path, lines: int, pause: str, *, silent_task: bool = False) -> Path:
    """A task `print` printing `line 1` ... `line N`, sleeping `pause` seconds after each.
    With `silent_task`, a task `silent` runs beside it, printing nothing for ten minutes
    (both after a task `start`: a flow without `depends_on` runs its tasks one by one)."""
    start = '\n  - id: start\n    command: "true"' if silent_task else ""
    after_start = "\n    depends_on: [start]" if silent_task else ""
    silent = (
        '\n  - id: silent\n    depends_on: [start]\n    command: "sleep 600"' if silent_task else ""
    )
    return write_flow(
        directory,
        f"""
id: printer
defaults: {{image: "{BASE_IMAGE}", pull: never}}
tasks:{start}
  - id: print{after_start}
    script: |
      i=0
      while [ "$i" -lt {lines} ]; do i=$((i + 1)); echo "line $i"; sleep {pause}; done{silent}
""",
    )


def wait_for_lines(url: str, at_least: int, timeout: float = 60) -> tuple[str, int]:
    """Wait until the only execution in the database has `at_least` log lines stored."""
    deadline = time.monotonic() + timeout
    with open_store(url) as store:
        while time.monotonic() < deadline:
            found = api.list_executions(store, limit=2).executions
            if found:
                assert len(found) == 1, found
                stored = store.count_logs(found[0].id)
                if stored >= at_least:
                    return found[0].id, stored
            time.sleep(0.1)
    pytest.fail(f"fewer than {at_least} log lines stored after {timeout:.0f} s")


def wait_for_running(url: str, execution_id: str, tasks: set[str], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    with open_store(url) as store:
        while time.monotonic() < deadline:
            runs = store.get_execution(execution_id).task_runs
            if {r.task_id for r in runs if r.state is TaskState.RUNNING} >= tasks:
                return
            time.sleep(0.1)
    pytest.fail(f"tasks {sorted(tasks)} are not all running after {timeout:.0f} s: {runs}")


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


# -- runner db -----------------------------------------------------------------------------


def test_db_current_and_upgrade(database_url: str, tmp_path: Path) -> None:
    cli = Cli(cwd=tmp_path, db_url=database_url)  # through RUNNER_DATABASE_URL
    where = f"postgresql database '{make_url(database_url).database}' at 127.0.0.1"

    fresh = cli("db", "current", "--check")
    assert fresh.returncode == 1, fresh.stderr
    assert fresh.stdout.startswith(f"{where}:") and "no tables yet" in fresh.stdout
    with open_store(database_url, upgrade=False) as store:
        before = store.schema_revision()
    assert (before.current, before.known, before.is_head) == (None, True, False)

    upgraded = cli("db", "upgrade")
    assert upgraded.returncode == 0, upgraded.stderr
    assert upgraded.stdout.strip().endswith(f"created the tables, revision {before.head} (head)")

    current = cli("db", "current", "--check", "--db", database_url)
    assert current.returncode == 0, current.stderr
    assert current.stdout.strip().endswith(f": revision {before.head} (head)")
    again = cli("db", "upgrade")
    assert again.returncode == 0 and "already at revision" in again.stdout, again


def test_db_current_reports_a_revision_of_a_newer_runner(database_url: str, tmp_path: Path) -> None:
    with open_store(database_url) as store:
        head = store.schema_revision().head
    engine = create_engine(database_url)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql("UPDATE alembic_version SET version_num = 'f00d'")
    finally:
        engine.dispose()
    cli = Cli(cwd=tmp_path, db_url=database_url)
    current = cli("db", "current")
    assert current.returncode == 0, current.stderr
    assert f"revision f00d, unknown to this runner (it ships up to {head})" in current.stdout
    upgrade = cli("db", "upgrade")
    assert upgrade.returncode == 1
    assert upgrade.stderr.count("\n") == 1 and "does not know" in upgrade.stderr


# -- connection errors ---------------------------------------------------------------------


def test_a_wrong_password_is_one_line_with_host_port_and_database(
    server_url: str, tmp_path: Path
) -> None:
    url = make_url(server_url).set(password="WRONG-pw-123")
    cli = Cli(cwd=tmp_path, db_url="sqlite:///unused.db")
    out = cli("executions", "--db", url.render_as_string(hide_password=False), timeout=60)
    assert out.returncode == 1
    assert out.stderr == (
        f"error: cannot connect to postgresql database '{url.database}' at"
        f" {url.host}:{url.port or 5432}: password authentication failed for user"
        f' "{url.username}"\n'
    )
    assert "WRONG-pw-123" not in out.stderr + out.stdout


def test_an_unreachable_server_is_one_line(tmp_path: Path) -> None:
    port = free_port()
    cli = Cli(cwd=tmp_path, db_url=f"postgresql+psycopg://runner:secret@127.0.0.1:{port}/teamdb")
    for args in (("executions",), ("db", "current"), ("db", "upgrade")):
        out = cli(*args, timeout=60)
        assert out.returncode == 1, out
        assert out.stderr.startswith(
            f"error: cannot connect to postgresql database 'teamdb' at 127.0.0.1:{port}:"
            " Connection refused"
        )
        assert out.stderr.count("\n") == 1 and "secret" not in out.stderr


@pytest.mark.parametrize("value", ["soon", "-1", "inf"])
def test_a_bad_retry_limit_is_one_line(tmp_path: Path, value: str) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "runner", "executions"],
        cwd=tmp_path,
        env={**Cli(cwd=tmp_path, db_url="sqlite:///r.db").env(), "RUNNER_DB_RETRY_SECONDS": value},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (out.returncode, out.stderr) == (
        2,
        f"error: RUNNER_DB_RETRY_SECONDS must be a number of seconds >= 0, not '{value}'\n",
    )


# -- the store's retries ---------------------------------------------------------------------


def new_execution(store: Store) -> str:
    execution_id = uuid.uuid4().hex
    store.create_execution(
        execution_id=execution_id,
        flow_id="retry",
        namespace="tests",
        revision="r1",
        source="id: retry\ntasks: []\n",
        inputs={},
        labels={},
    )
    return execution_id


class _Connections:
    """Refuse or allow new connections to one database, and end the open ones."""

    def __init__(self, server_url: str, database_url: str) -> None:
        self.name = make_url(database_url).database
        self.admin = create_engine(server_url, isolation_level="AUTOCOMMIT")

    def refuse(self) -> None:
        with self.admin.connect() as conn:
            conn.exec_driver_sql(f'ALTER DATABASE "{self.name}" ALLOW_CONNECTIONS false')
            conn.exec_driver_sql(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                (self.name,),
            )

    def allow(self) -> None:
        with self.admin.connect() as conn:
            conn.exec_driver_sql(f'ALTER DATABASE "{self.name}" ALLOW_CONNECTIONS true')

    def close(self) -> None:
        self.allow()
        self.admin.dispose()


@pytest.fixture
def connections(server_url: str, database_url: str) -> Iterator[_Connections]:
    switch = _Connections(server_url, database_url)
    try:
        yield switch
    finally:
        switch.close()


def test_writes_wait_for_the_database_to_come_back(
    database_url: str, connections: _Connections
) -> None:
    with open_store(database_url, retry_seconds=30) as store:
        execution_id = new_execution(store)
        connections.refuse()
        threading.Timer(1.5, connections.allow).start()
        started = time.monotonic()
        run_id = store.create_task_run(
            execution_id=execution_id, task_id="t", attempt=1, image=None
        )
        store.set_execution_state(execution_id, ExecutionState.SUCCESS)
        waited = time.monotonic() - started
        record = store.get_execution(execution_id)
    assert 1.0 < waited < 10, waited
    assert [(r.id, r.task_id) for r in record.task_runs] == [(run_id, "t")]
    assert record.state is ExecutionState.SUCCESS


def test_the_store_gives_up_after_its_limit_and_recovers_later(
    database_url: str, connections: _Connections
) -> None:
    with open_store(database_url, retry_seconds=1.5) as store:
        execution_id = new_execution(store)
        connections.refuse()
        started = time.monotonic()
        with pytest.raises(StoreUnavailableError) as raised:
            store.set_execution_state(execution_id, ExecutionState.RUNNING)
        took = time.monotonic() - started
        message = str(raised.value)
        # The outage clock is the store's, not the call's: the next write gives up at once.
        started = time.monotonic()
        with pytest.raises(StoreUnavailableError):
            store.create_task_run(execution_id=execution_id, task_id="t", attempt=1, image=None)
        second = time.monotonic() - started
        connections.allow()
        store.set_execution_state(execution_id, ExecutionState.SUCCESS)  # clock reset
        assert store.get_execution(execution_id).state is ExecutionState.SUCCESS
    assert 1.4 < took < 5, took
    assert second < 1, second
    name = make_url(database_url).database
    assert message.startswith(
        f"cannot set the state of execution '{execution_id}' in postgresql database '{name}' at "
    )
    assert "; gave up after 1.5 s of retries (RUNNER_DB_RETRY_SECONDS sets how long)" in message
    assert "\n" not in message


def test_the_log_writer_gives_up_when_the_store_does(
    database_url: str, connections: _Connections
) -> None:
    with open_store(database_url, retry_seconds=1) as store:
        execution_id = new_execution(store)
        run_id = store.create_task_run(
            execution_id=execution_id, task_id="t", attempt=1, image=None
        )
        writer = LogWriter(store, give_up_after=600)  # the store's limit decides
        connections.refuse()
        started = time.monotonic()
        writer.add(NewLogLine(execution_id, run_id, "t", "stdout", "lost", datetime.now(UTC)))
        with pytest.raises(StoreUnavailableError, match="cannot store 1 log lines"):
            writer.flush()
        with pytest.raises(StoreError):
            writer.close()
    assert time.monotonic() - started < 8


class _CommitThenDrop:
    """Stands in for the store's write engine: the first transaction commits, then
    reports the connection lost, as when the server's reply to COMMIT never arrives."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self.dropped = 0

    def begin(self) -> Any:
        outer = self

        class Transaction:
            def __enter__(self) -> Any:
                self.inner = outer.engine.begin()
                return self.inner.__enter__()

            def __exit__(self, *exc_info: Any) -> None:
                self.inner.__exit__(*exc_info)
                if exc_info[0] is None and outer.dropped == 0:
                    outer.dropped += 1
                    raise sa_exc.OperationalError(
                        "COMMIT", {}, psycopg.OperationalError("server closed the connection")
                    )

        return Transaction()


def test_a_retried_insert_whose_commit_got_through_is_not_stored_twice(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with open_store(database_url) as store:
        writer = _CommitThenDrop(store._writer)
        monkeypatch.setattr(store, "_writer", writer)
        execution_id = new_execution(store)  # would fail on a duplicate key if retried blindly
        writer.dropped = 0
        run_id = store.create_task_run(
            execution_id=execution_id, task_id="t", attempt=1, image=None
        )
        writer.dropped = 0
        skipped = store.record_skipped(execution_id=execution_id, task_id="s", reason="upstream")
        record = store.get_execution(execution_id)
    assert [(r.id, r.task_id, r.state) for r in record.task_runs] == [
        (run_id, "t", TaskState.CREATED),
        (skipped, "s", TaskState.SKIPPED),
    ]


# -- whole runs --------------------------------------------------------------------------------


def fanout_flow(directory: Path) -> Path:
    branches = "\n".join(
        f"""  - id: p{n}
    depends_on: [root]
    script: |
      i=0
      while [ "$i" -lt {FANOUT_LINES} ]; do i=$((i + 1)); echo "p{n} line $i"; done"""
        for n in range(1, FANOUT_TASKS + 1)
    )
    return write_flow(
        directory,
        f"""
id: fanout_pg
defaults: {{image: "{BASE_IMAGE}", pull: never}}
tasks:
  - id: root
    command: "echo root done"
{branches}
""",
    )


def test_concurrent_runs_lose_no_row(database_url: str, docker_client: Any, tmp_path: Path) -> None:
    flow = fanout_flow(tmp_path)
    started = time.monotonic()
    runs = [
        start_runner(tmp_path, database_url, "run", str(flow), name=f"run{n}")
        for n in range(CONCURRENT_RUNS)
    ]
    outcomes = [run.wait(timeout=300) for run in runs]
    took = time.monotonic() - started
    for code, stdout, stderr in outcomes:
        assert code == 0, f"exit {code}\nstdout:\n{stdout}\nstderr:\n{stderr[-3000:]}"
    ids = [execution_id_of(stdout) for _, stdout, _ in outcomes]
    assert len(set(ids)) == CONCURRENT_RUNS

    tasks = ["root", *(f"p{n}" for n in range(1, FANOUT_TASKS + 1))]
    with open_store(database_url) as store:
        assert {e.id for e in api.list_executions(store, limit=100).executions} == set(ids)
        for execution_id in ids:
            record = store.get_execution(execution_id)
            assert record.state is ExecutionState.SUCCESS, record
            assert sorted(
                (r.task_id, r.attempt, r.state, r.exit_code) for r in record.task_runs
            ) == sorted((task, 1, TaskState.SUCCESS, 0) for task in tasks)
            assert store.get_logs(execution_id, task_id="root")[-1].line == "root done"
            for task in tasks[1:]:
                lines = [ln.line for ln in store.get_logs(execution_id, task_id=task)]
                assert lines == [f"{task} line {i}" for i in range(1, FANOUT_LINES + 1)], task
            assert store.count_logs(execution_id) == FANOUT_TASKS * FANOUT_LINES + len(
                store.get_logs(execution_id, task_id="root")
            )
            assert labelled(docker_client, execution_id) == ([], [])
    print(f"{CONCURRENT_RUNS} concurrent runs took {took:.1f} s")


def test_a_postgres_restart_mid_run_loses_no_line(
    own_postgres: OwnPostgres, docker_client: Any, tmp_path: Path
) -> None:
    lines = 1000
    flow = printing_flow(tmp_path, lines, "0.01")
    run = start_runner(tmp_path, own_postgres.url, "run", str(flow))
    try:
        execution_id, before = wait_for_lines(own_postgres.url, at_least=100)
        restart_started = time.monotonic()
        own_postgres.container.restart(timeout=10)
        back_after = own_postgres.wait_ready() + (time.monotonic() - restart_started)
        code, stdout, stderr = run.wait(timeout=180)
    finally:
        run.stop(docker_client)
    assert code == 0, f"exit {code}\nstdout:\n{stdout}\nstderr:\n{stderr[-3000:]}"
    assert before < lines  # the restart happened while the task was printing
    assert "log_write_failed" in stderr or "store_write_retrying" in stderr  # it was retried
    with open_store(own_postgres.url) as store:
        record = store.get_execution(execution_id)
        stored = [ln.line for ln in store.get_logs(execution_id)]
    assert record.state is ExecutionState.SUCCESS, record
    assert [(r.task_id, r.state) for r in record.task_runs] == [("print", TaskState.SUCCESS)]
    assert stored == [f"line {i}" for i in range(1, lines + 1)]
    assert labelled(docker_client, execution_id) == ([], [])
    print(f"postgres was down about {back_after:.1f} s; {before} lines were stored before")


def test_a_postgres_that_stays_down_ends_the_run_within_the_limit(
    own_postgres: OwnPostgres, docker_client: Any, tmp_path: Path
) -> None:
    limit = 5
    # About a minute of output, which outlives the limit, beside a task that prints
    # nothing: the run must not wait for that one to end on its own.
    flow = printing_flow(tmp_path, 6000, "0.01", silent_task=True)
    run = start_runner(
        tmp_path, own_postgres.url, "run", str(flow), env={"RUNNER_DB_RETRY_SECONDS": str(limit)}
    )
    try:
        execution_id = run.execution_id()
        wait_for_lines(own_postgres.url, at_least=50)
        wait_for_running(own_postgres.url, execution_id, {"print", "silent"})
        own_postgres.container.stop(timeout=10)
        stopped = time.monotonic()
        code, _, stderr = run.wait(timeout=limit + 60)
        took = time.monotonic() - stopped
    finally:
        run.stop(docker_client)
    assert code == 1, stderr[-3000:]
    assert took < limit + 15, took
    assert "Traceback" not in stderr
    errors = error_lines(stderr)
    assert len(errors) == 1 and stderr.splitlines()[-1] == errors[0], stderr[-3000:]
    assert errors[0].startswith("error: cannot ")
    assert f"in postgresql database 'runner' at 127.0.0.1:{own_postgres.port}: " in errors[0]
    assert errors[0].endswith(
        f"; gave up after {limit} s of retries (RUNNER_DB_RETRY_SECONDS sets how long)"
    )
    assert labelled(docker_client, execution_id) == ([], [])
    print(f"the run ended {took:.1f} s after postgres stopped (limit {limit} s)")
