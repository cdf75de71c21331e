"""Leases, kill requests and recovery without a database or an engine: the in-memory store
and the scripted FakeBackend. What a real database adds is in tests/unit/test_store.py.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from runner.api import kill_execution, run_flow
from runner.backends.fake import FakeBackend, Script
from runner.execution import ExecutionState, TaskState
from runner.lease import Heartbeat, Owner
from runner.loader import LoadedFlow, parse_flow
from runner.recovery import expired_leases, recover_orphans
from runner.store import Beat
from runner.store.testing import InMemoryStore


@pytest.fixture
def store() -> Iterator[InMemoryStore]:
    with InMemoryStore() as s:
        yield s


@pytest.fixture(autouse=True)
def quick_leases(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUNNER_HEARTBEAT_SECONDS", "0.05")
    monkeypatch.setenv("RUNNER_LEASE_SECONDS", "30")


def leased(store: InMemoryStore, owner: Owner, *, state: ExecutionState | None = None) -> str:
    execution_id = uuid.uuid4().hex
    store.create_execution(
        execution_id=execution_id,
        flow_id="f",
        namespace="default",
        revision="r",
        source="id: f\ntasks:\n- {id: a, image: i}\n",
        inputs={},
        labels={},
        owner=owner,
        flow_path="/nowhere/f.yml",
    )
    if state is not None:
        store.set_execution_state(execution_id, state)
    return execution_id


class Stops:
    """Records the reasons a Heartbeat gives to stop, and when."""

    def __init__(self) -> None:
        self.reasons: list[str] = []
        self.event = threading.Event()
        self.at: float | None = None

    def __call__(self, reason: str) -> None:
        self.reasons.append(reason)
        self.at = time.monotonic()
        self.event.set()


# -- the heartbeat ------------------------------------------------------------------------


def test_a_kill_request_stops_the_owner_once(store: InMemoryStore) -> None:
    owner = Owner("here", 1, "a" * 32)
    execution_id = leased(store, owner)
    stops = Stops()
    with Heartbeat(store, execution_id, owner, stops, interval_s=0.02):
        store.request_kill(execution_id)
        assert stops.event.wait(5)
        time.sleep(0.1)  # more beats, each seeing the kill: still one call
    assert stops.reasons == ["killed by `runner kill`"]


def test_a_lease_taken_over_stops_the_owner(store: InMemoryStore) -> None:
    owner = Owner("here", 1, "a" * 32)
    execution_id = leased(store, owner)
    (lease,) = store.active_leases(execution_id)
    assert store.take_lease(lease, Owner("elsewhere", 2, "b" * 32))
    stops = Stops()
    with Heartbeat(store, execution_id, owner, stops, interval_s=0.02):
        assert stops.event.wait(5)
    assert stops.reasons == ["another runner took this execution over (its lease expired)"]
    assert store.heartbeat(execution_id, owner.token) is Beat.LOST


# -- kill and recovery through the API ------------------------------------------------------


def _flow(tmp_path: Path) -> LoadedFlow:
    return parse_flow(
        "id: f\ntasks:\n- {id: slow, image: i}\n- {id: after, image: i, depends_on: [slow]}\n",
        path=tmp_path / "f.yml",
    )


def test_kill_from_another_thread_reaches_the_run_through_the_store(
    store: InMemoryStore, tmp_path: Path
) -> None:
    backend = FakeBackend({"slow": Script(lines=("working",), seconds=30)})
    created: list[str] = []
    done: list[object] = []
    runner = threading.Thread(
        target=lambda: done.append(
            run_flow(_flow(tmp_path), store=store, backend=backend, on_created=created.append)
        )
    )
    runner.start()
    deadline = time.monotonic() + 10
    while not backend.started and time.monotonic() < deadline:
        time.sleep(0.01)
    assert created and backend.started
    state = kill_execution(created[0], store=store, backend=FakeBackend(), wait_s=10)
    runner.join(10)
    assert state is ExecutionState.KILLED
    record = store.get_execution(created[0])
    assert record.state is ExecutionState.KILLED and record.error == "killed by `runner kill`"
    assert [(r.task_id, r.state) for r in record.task_runs] == [("slow", TaskState.KILLED)]


def test_recovery_ends_an_execution_whose_runner_went_silent(store: InMemoryStore) -> None:
    gone = Owner("elsewhere", 4242, "d" * 32)
    execution_id = leased(store, gone, state=ExecutionState.RUNNING)
    run_id = store.create_task_run(execution_id=execution_id, task_id="a", attempt=1, image="i")
    store.task_run_started(run_id, container_id="c-gone", started_at=datetime.now(UTC))
    connected: list[FakeBackend] = []

    def connect() -> FakeBackend:
        connected.append(FakeBackend())
        return connected[0]

    row = store._executions[execution_id]
    assert row.heartbeat_at is not None
    row.heartbeat_at -= timedelta(seconds=29)
    assert expired_leases(store) == []
    assert recover_orphans(store, connect) == []
    assert connected == []  # nothing to recover: the engine is not even asked
    row.heartbeat_at -= timedelta(seconds=2)  # 31 s without a heartbeat
    (recovered,) = recover_orphans(store, connect)
    assert recovered.execution_id == execution_id
    assert recovered.state is ExecutionState.FAILED and recovered.lost == ("a",)
    record = store.get_execution(execution_id)
    assert record.state is ExecutionState.FAILED
    assert "the runner running it (pid 4242 on elsewhere) died" in (record.error or "")
    (run,) = record.task_runs
    assert run.state is TaskState.FAILED and "its container is gone" in (run.error or "")
    assert recover_orphans(store, connect) == []
