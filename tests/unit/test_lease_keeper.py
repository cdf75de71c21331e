"""The lease keeper: one statement per beat renews every lease a worker holds, and each
held lease still hears its kill, its loss and a database that stays silent, as a
Heartbeat would. In-memory store (its clock and outages), scripted FakeBackend."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from runner import api
from runner.backends.fake import FakeBackend, Script
from runner.execution import ExecutionState
from runner.lease import Beat, LeaseKeeper, Owner
from runner.loader import parse_flow
from runner.store.testing import InMemoryStore


class CountingStore(InMemoryStore):
    """Counts the renewals: one heartbeat_many per beat, never one heartbeat each."""

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[int] = []
        self.single = 0

    def heartbeat_many(self, token: str, execution_ids: Sequence[str]) -> dict[str, Beat]:
        self.batches.append(len(execution_ids))
        return super().heartbeat_many(token, execution_ids)

    def heartbeat(self, execution_id: str, token: str) -> Beat:
        self.single += 1
        return super().heartbeat(execution_id, token)


@pytest.fixture
def store() -> Iterator[CountingStore]:
    with CountingStore() as opened:
        yield opened


def _new(store: InMemoryStore, owner: Owner) -> str:
    import uuid

    execution_id = uuid.uuid4().hex
    store.create_execution(
        execution_id=execution_id,
        flow_id="f",
        namespace="n",
        revision="r",
        source="id: f",
        inputs={},
        labels={},
        owner=owner,
    )
    return execution_id


def test_one_statement_renews_every_lease_a_worker_holds(
    store: CountingStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RUNNER_HEARTBEAT_SECONDS", "0.1")
    backend = FakeBackend({"a": Script(seconds=1.5)})
    worker = api.Worker(store, backend=backend, max_running=1)
    flow = parse_flow("id: f\ntasks: [{id: a, image: i}]\n", path=tmp_path / "f.yml")
    try:
        ids = [worker.submit(flow) for _ in range(20)]  # one runs, 19 wait for the thread
        time.sleep(0.6)
        leases = store.active_leases(lease_s=30)
        assert {lease.execution_id for lease in leases} == set(ids)
        assert len({lease.token for lease in leases}) == 1  # one owner: the worker
        assert store.batches and max(store.batches) == 20
        assert store.single == 0
        before = {lease.execution_id: lease.heartbeat_at for lease in leases}
        time.sleep(0.3)
        after = {
            lease.execution_id: lease.heartbeat_at for lease in store.active_leases(lease_s=30)
        }
        assert all(after[i] > before[i] for i in ids)  # the queued ones too
    finally:
        worker.shutdown()
    assert len(threading.enumerate()) < 20  # no thread per lease


def test_a_held_lease_hears_its_kill_request(store: CountingStore) -> None:
    owner = Owner.here()
    keeper = LeaseKeeper(store, owner, interval_s=0.05, lease_s=5)
    first, second = _new(store, owner), _new(store, owner)
    stopped: list[tuple[str, str]] = []
    try:
        with (
            keeper.hold(first, lambda r: stopped.append((first, r))),
            keeper.hold(second, lambda r: stopped.append((second, r))),
        ):
            store.request_kill(second)
            deadline = time.monotonic() + 5
            while not stopped and time.monotonic() < deadline:
                time.sleep(0.02)
            time.sleep(0.2)
    finally:
        keeper.close()
    assert stopped == [(second, "killed by `runner kill`")]


def test_a_lost_lease_is_fenced_then_stopped(store: CountingStore) -> None:
    owner = Owner.here()
    keeper = LeaseKeeper(store, owner, interval_s=0.05, lease_s=5)
    execution_id = _new(store, owner)
    said: list[str] = []
    try:
        with keeper.hold(
            execution_id,
            lambda r: said.append(f"stop: {r}"),
            on_lost=lambda r: said.append("fence"),
        ):
            [lease] = store.active_leases(execution_id, lease_s=5)
            assert store.take_lease(lease, Owner.here())
            deadline = time.monotonic() + 5
            while len(said) < 2 and time.monotonic() < deadline:
                time.sleep(0.02)
    finally:
        keeper.close()
    assert said == [
        "fence",
        "stop: another runner took this execution over (its lease expired)",
    ]


def test_leases_not_renewed_for_the_lease_time_stop_their_runs(store: CountingStore) -> None:
    owner = Owner.here()
    keeper = LeaseKeeper(store, owner, interval_s=0.05, lease_s=0.5)
    ids = [_new(store, owner) for _ in range(3)]
    stopped: list[str] = []
    holds = [keeper.hold(i, lambda r, i=i: stopped.append(i), on_lost=lambda r: None) for i in ids]
    try:
        for held in holds:
            held.__enter__()
        with store.outage():
            deadline = time.monotonic() + 5
            while len(stopped) < 3 and time.monotonic() < deadline:
                time.sleep(0.02)
    finally:
        for held in holds:
            held.__exit__(None, None, None)
        keeper.close()
    assert sorted(stopped) == sorted(ids)


def test_a_worker_kills_a_queued_execution_on_request(store: CountingStore, tmp_path: Path) -> None:
    backend = FakeBackend({"a": Script(seconds=30)})
    worker = api.Worker(store, backend=backend, max_running=1)
    flow = parse_flow("id: f\ntasks: [{id: a, image: i}]\n", path=tmp_path / "f.yml")
    try:
        running = worker.submit(flow)
        queued = worker.submit(flow)
        assert api.kill_execution(queued, store=store, backend=backend, wait_s=10) is (
            ExecutionState.KILLED
        )
        worker.kill(running)
    finally:
        worker.shutdown()
