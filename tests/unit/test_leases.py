"""Leases, kill requests and recovery without a database or an engine: the in-memory store
(its clock is the "database's clock") and the scripted FakeBackend.

What a real database adds (its own clock, several processes) is in tests/unit/test_store.py
and tests/integration/test_leases_clock.py.
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


class Clock:
    """A clock a test moves by hand."""

    def __init__(self) -> None:
        self.now = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(clock: Clock) -> Iterator[InMemoryStore]:
    with InMemoryStore(clock=clock) as s:
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


def test_the_heartbeat_renews_the_lease_by_the_stores_clock(
    store: InMemoryStore, clock: Clock
) -> None:
    owner = Owner("here", 1, "a" * 32)
    execution_id = leased(store, owner)
    clock.advance(25)
    stops = Stops()
    with Heartbeat(store, execution_id, owner, stops, interval_s=0.02, lease_s=30):
        deadline = time.monotonic() + 5
        while store.active_leases(execution_id, lease_s=30)[0].heartbeat_at != clock.now:
            assert time.monotonic() < deadline, "the heartbeat never renewed the lease"
            time.sleep(0.01)
        clock.advance(25)  # 50 s after creation, 25 s after the last beat: alive
        assert not store.active_leases(execution_id, lease_s=30)[0].expired
    assert stops.reasons == []


def test_a_kill_request_stops_the_owner_once(store: InMemoryStore) -> None:
    owner = Owner("here", 1, "a" * 32)
    execution_id = leased(store, owner)
    stops = Stops()
    with Heartbeat(store, execution_id, owner, stops, interval_s=0.02, lease_s=30):
        store.request_kill(execution_id)
        assert stops.event.wait(5)
        time.sleep(0.1)  # more beats, each seeing the kill: still one call
    assert stops.reasons == ["killed by `runner kill`"]


def test_a_lease_taken_over_stops_the_owner(store: InMemoryStore, clock: Clock) -> None:
    owner = Owner("here", 1, "a" * 32)
    execution_id = leased(store, owner)
    (lease,) = store.active_leases(execution_id, lease_s=30)
    assert store.take_lease(lease, Owner("elsewhere", 2, "b" * 32))
    stops = Stops()
    with Heartbeat(store, execution_id, owner, stops, interval_s=0.02, lease_s=30):
        assert stops.event.wait(5)
    assert stops.reasons == ["another runner took this execution over (its lease expired)"]
    assert store.heartbeat(execution_id, owner.token) is Beat.LOST


def test_an_owner_that_cannot_renew_within_the_lease_stops(store: InMemoryStore) -> None:
    owner = Owner("here", 1, "a" * 32)
    execution_id = leased(store, owner)
    stops = Stops()
    lease_s, interval_s = 0.6, 0.05
    with Heartbeat(store, execution_id, owner, stops, interval_s=interval_s, lease_s=lease_s):
        time.sleep(0.2)
        with store.outage():
            lost_at = time.monotonic()
            assert stops.event.wait(10), "the owner kept running without its lease"
    assert stops.at is not None
    silent = stops.at - lost_at
    # one beat before the lease runs out, counted from the last renewal that worked
    assert lease_s - 3 * interval_s <= silent + interval_s < lease_s + 2
    (reason,) = stops.reasons
    assert reason.startswith("could not renew its lease for ")
    assert "before another runner may take the execution over" in reason


def test_a_short_outage_does_not_stop_the_owner(store: InMemoryStore) -> None:
    owner = Owner("here", 1, "a" * 32)
    execution_id = leased(store, owner)
    stops = Stops()
    with Heartbeat(store, execution_id, owner, stops, interval_s=0.05, lease_s=1.5):
        with store.outage():
            time.sleep(0.5)
        time.sleep(1.5)  # renewed again: the silence is over
    assert stops.reasons == []


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


def test_recovery_ends_an_execution_whose_runner_went_silent(
    store: InMemoryStore, clock: Clock
) -> None:
    gone = Owner("elsewhere", 4242, "d" * 32, boot_id="another-boot")
    execution_id = leased(store, gone, state=ExecutionState.RUNNING)
    run_id = store.create_task_run(execution_id=execution_id, task_id="a", attempt=1, image="i")
    store.task_run_started(run_id, container_id="c-gone", started_at=clock.now)
    connected: list[FakeBackend] = []

    def connect() -> FakeBackend:
        connected.append(FakeBackend())
        return connected[0]

    clock.advance(29)
    assert expired_leases(store) == []
    assert recover_orphans(store, connect) == []
    assert connected == []  # nothing to recover: the engine is not even asked
    clock.advance(2)  # 31 s without a heartbeat, by the store's clock
    (recovered,) = recover_orphans(store, connect)
    assert recovered.execution_id == execution_id
    assert recovered.state is ExecutionState.FAILED and recovered.lost == ("a",)
    record = store.get_execution(execution_id)
    assert record.state is ExecutionState.FAILED
    assert "the runner running it (pid 4242 on elsewhere) died" in (record.error or "")
    (run,) = record.task_runs
    assert run.state is TaskState.FAILED and "its container is gone" in (run.error or "")
    assert recover_orphans(store, connect) == []
