"""The library API as a server would call it: submit in the background, read the history
page by page, info. Run against the scripted FakeBackend; containers are
tests/integration's business."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from runner import api
from runner.backends.fake import FakeBackend, Script
from runner.errors import InputError, UnavailableError, UsageError
from runner.execution import ExecutionState, TaskState
from runner.loader import parse_flow
from runner.store import Store
from runner.store.testing import InMemoryStore

FLOW = """\
id: f
namespace: team
labels: {owner: data}
inputs:
  - {id: n, type: int, default: 1}
tasks:
  - {id: a, image: i}
  - {id: b, image: i, depends_on: [a]}
"""


@pytest.fixture(params=["memory", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """The in-memory double, and SQLite to show the double tells the truth."""
    if request.param == "memory":
        yield InMemoryStore()
        return
    opened = api.open_store(f"sqlite:///{tmp_path / 'runner.db'}", recover=False)
    yield opened
    opened.close()


def _wait_state(store: Store, execution_id: str, *states: ExecutionState) -> ExecutionState:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        state = api.get_execution(store, execution_id).state
        if state in states:
            return state
        time.sleep(0.02)
    raise AssertionError(f"{execution_id} never reached {states}")


def test_submit_returns_at_once_and_the_worker_runs_it(store: Store, tmp_path: Path) -> None:
    backend = FakeBackend({"a": Script(lines=("hello",), seconds=0.5)})
    worker = api.Worker(store, backend=backend, max_running=2)
    flow = parse_flow(FLOW, path=tmp_path / "flow.yml")
    try:
        execution_id = worker.submit(flow, {"n": "3"})
        # Recorded before it ran: a server can answer GET /executions/{id} at once.
        record = api.get_execution(store, execution_id)
        assert record.inputs == {"n": 3} and record.namespace == "team"
        result = worker.wait(execution_id, timeout=30)
    finally:
        worker.shutdown()
    assert result.state is ExecutionState.SUCCESS
    assert [t.task_id for t in result.tasks] == ["a", "b"]
    assert [ln.line for ln in api.get_logs(store, execution_id)] == ["hello"]


def test_bad_input_is_refused_by_submit_before_anything_is_recorded(
    store: Store, tmp_path: Path
) -> None:
    worker = api.Worker(store, backend=FakeBackend())
    flow = parse_flow(FLOW, path=tmp_path / "flow.yml")
    try:
        with pytest.raises(InputError, match="expected an int"):
            worker.submit(flow, {"n": "many"})
    finally:
        worker.shutdown()
    assert api.list_executions(store).executions == ()


def test_a_worker_runs_at_most_max_running_and_the_rest_wait_leased(
    store: Store, tmp_path: Path
) -> None:
    backend = FakeBackend({"a": Script(seconds=1.0)})
    worker = api.Worker(store, backend=backend, max_running=1)
    flow = parse_flow(FLOW, path=tmp_path / "flow.yml")
    try:
        first = worker.submit(flow)
        second = worker.submit(flow)
        _wait_state(store, first, ExecutionState.RUNNING)
        assert api.get_execution(store, second).state is ExecutionState.CREATED
        # It waits for a thread, not for its lease: no one may take it for orphaned.
        (lease,) = [le for le in store.active_leases(lease_s=30) if le.execution_id == second]
        assert lease.owner_pid is not None
        for execution_id in (first, second):
            assert worker.wait(execution_id, timeout=30).state is ExecutionState.SUCCESS
    finally:
        worker.shutdown()
    assert backend.max_running == 1


def test_shutdown_kills_what_still_runs_after_the_grace_period(
    store: Store, tmp_path: Path
) -> None:
    backend = FakeBackend({"a": Script(seconds=60)})
    worker = api.Worker(store, backend=backend)
    flow = parse_flow(FLOW, path=tmp_path / "flow.yml")
    execution_id = worker.submit(flow)
    _wait_state(store, execution_id, ExecutionState.RUNNING)
    worker.shutdown(grace_s=0.2)
    record = api.get_execution(store, execution_id)
    assert record.state is ExecutionState.KILLED
    assert record.task_runs[0].state is TaskState.KILLED
    assert record.error == "killed: the worker running it shut down"
    with pytest.raises(UnavailableError, match="shut down"):
        worker.submit(flow)


def test_list_executions_filters_newest_first(store: Store, tmp_path: Path) -> None:
    backend = FakeBackend()
    flow = parse_flow(FLOW, path=tmp_path / "flow.yml")
    other = parse_flow("id: g\ntasks:\n- {id: a, image: i}\n", path=tmp_path / "g.yml")
    ids = [api.run_flow(flow, store=store, backend=backend).execution_id for _ in range(3)]
    ids.append(api.run_flow(other, store=store, backend=backend).execution_id)

    page = api.list_executions(store, limit=10)
    assert [e.id for e in page.executions] == ids[::-1]
    assert [e.id for e in api.list_executions(store, flow_id="f").executions] == ids[2::-1]
    failed = api.list_executions(store, states=["failed"]).executions
    assert failed == ()
    with pytest.raises(UsageError, match="limit"):
        api.list_executions(store, limit=0)


def test_get_logs_pages_after_a_line_id(store: Store, tmp_path: Path) -> None:
    lines = tuple(f"line {n}" for n in range(10))
    backend = FakeBackend({"a": Script(lines=lines)})
    flow = parse_flow(FLOW, path=tmp_path / "flow.yml")
    execution_id = api.run_flow(flow, store=store, backend=backend).execution_id

    first = api.get_logs(store, execution_id, limit=4)
    rest = api.get_logs(store, execution_id, after=first[-1].id)
    assert [ln.line for ln in first + rest] == list(lines)
    assert api.get_logs(store, execution_id, after=rest[-1].id) == []
    assert api.get_logs(store, execution_id, task_id="b") == []
    assert [ln.line for ln in api.get_logs(store, execution_id, tail=3)] == list(lines[-3:])
    with pytest.raises(UsageError, match="tail"):
        api.get_logs(store, execution_id, tail=0)


def test_info_names_backend_engine_and_database(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'runner.db'}"
    api.upgrade_schema(url)
    found = api.info(url, backend=FakeBackend())
    assert found.backend == "fake" and found.engine is not None
    assert found.engine.name == "fake engine" and found.engine_error is None
    assert found.schema is not None and found.schema.is_head
    assert found.database.endswith("runner.db") and found.database_error is None
    data = found.to_dict()
    assert data["schema"]["is_head"] is True and data["engine"]["version"] == "0"


def test_info_says_what_cannot_be_reached(tmp_path: Path) -> None:
    found = api.info("postgresql+psycopg://u:secret@127.0.0.1:1/db", backend=FakeBackend())
    assert found.schema is None and found.database_error is not None
    assert "secret" not in found.database and "secret" not in found.database_error
