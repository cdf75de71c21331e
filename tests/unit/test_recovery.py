"""Leases, kill and crash recovery with the scripted FakeBackend and a store: who owns an
execution, what happens when that process dies, and how `runner kill` reaches it. The same
paths with real containers and processes are in tests/integration/test_control.py."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from runner import api
from runner.backends.fake import FakeBackend, Script
from runner.execution import (
    LABEL_EXECUTION,
    LABEL_TASK_RUN,
    ContainerSpec,
    ExecutionState,
    TaskState,
)
from runner.lease import Beat, Heartbeat, Owner
from runner.loader import parse_flow
from runner.recovery import collect_garbage, recover_orphans
from runner.store import NewLogLine, Store
from runner.store.fence import LeaseLostError
from runner.store.testing import InMemoryStore

FLOW = "id: f\ntasks:\n- {id: work, image: i}\n- {id: after, image: i, depends_on: [work]}\n"


@pytest.fixture(params=["memory", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """The in-memory double, and SQLite to show the double tells the truth."""
    if request.param == "memory":
        yield InMemoryStore()
        return
    opened = api.open_store(f"sqlite:///{tmp_path / 'runner.db'}", recover=False)
    yield opened
    opened.close()


@pytest.fixture
def fast_leases(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUNNER_HEARTBEAT_SECONDS", "0.05")
    monkeypatch.setenv("RUNNER_LEASE_SECONDS", "0.3")


def _dead_owner() -> Owner:
    """An owner on this host whose process has ended (and been reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    here = Owner.here()
    return Owner(host=here.host, pid=child.pid, token="dead-token", boot_id=here.boot_id)


def _orphan(
    store: Store,
    tmp_path: Path,
    owner: Owner,
    *,
    started: bool = True,
    flow: str = FLOW,
) -> tuple[str, int]:
    """An execution left behind by `owner`: RUNNING, its first task run started."""
    loaded = parse_flow(flow, path=tmp_path / "flow.yml")
    execution_id = uuid.uuid4().hex
    store.create_execution(
        execution_id=execution_id,
        flow_id=loaded.flow.id,
        namespace=loaded.flow.namespace,
        revision=loaded.revision,
        source=loaded.source,
        inputs={},
        labels={},
        owner=owner,
        flow_path=str(loaded.path),
    )
    run_id = 0
    if started:
        store.set_execution_state(execution_id, ExecutionState.RUNNING)
        run_id = store.create_task_run(
            execution_id=execution_id, task_id="work", attempt=1, image="i"
        )
    return execution_id, run_id


def _container(backend: FakeBackend, execution_id: str, run_id: int, task: str = "work") -> str:
    """Start, on the fake engine, the container the dead runner had started."""
    return backend.start(
        ContainerSpec(
            name=f"runner-{execution_id[:12]}-{task}-{run_id}",
            image="i",
            command=None,
            env={"RUNNER_TASK_ID": task, "RUNNER_ATTEMPT": "1"},
            labels={LABEL_EXECUTION: execution_id, LABEL_TASK_RUN: str(run_id)},
            workspace="ws",
        )
    )


def test_an_orphan_whose_container_still_runs_is_adopted_and_finished(
    store: Store, tmp_path: Path
) -> None:
    backend = FakeBackend({"work": Script(lines=("one", "two", "three"))})
    execution_id, run_id = _orphan(store, tmp_path, _dead_owner())
    container_id = _container(backend, execution_id, run_id)
    store.task_run_started(run_id, container_id=container_id, started_at=datetime.now(UTC))
    # The dead runner had stored the first line.
    store.append_logs(
        [NewLogLine(execution_id, run_id, "work", "stdout", "one", datetime.now(UTC))]
    )

    recovered = recover_orphans(store, lambda: backend)

    assert [(r.execution_id, r.adopted, r.lost) for r in recovered] == [
        (execution_id, ("work",), ())
    ]
    record = store.get_execution(execution_id)
    runs = {run.task_id: run for run in record.task_runs}
    assert runs["work"].state is TaskState.SUCCESS and runs["work"].exit_code == 0
    # Every line once, in order: the stored one was not stored again.
    assert [ln.line for ln in store.get_logs(execution_id)] == ["one", "two", "three"]
    # `after` never ran: the execution waits for a restart, with the hint.
    assert record.state is ExecutionState.FAILED
    assert "did not finish: after" in (record.error or "")
    assert f"runner restart {execution_id}" in (record.error or "")
    assert container_id in backend.removed


def test_an_orphan_whose_container_is_gone_fails_saying_the_runner_died(
    store: Store, tmp_path: Path
) -> None:
    backend = FakeBackend()
    execution_id, _ = _orphan(store, tmp_path, _dead_owner())

    (recovered,) = recover_orphans(store, lambda: backend)

    assert recovered.lost == ("work",) and recovered.state is ExecutionState.FAILED
    run = store.get_execution(execution_id).task_runs[0]
    assert run.state is TaskState.FAILED
    assert run.error is not None and "died" in run.error and "container is gone" in run.error


def test_an_orphan_that_never_started_ends_failed_without_touching_the_engine(
    store: Store, tmp_path: Path
) -> None:
    execution_id, _ = _orphan(store, tmp_path, _dead_owner(), started=False)
    (recovered,) = recover_orphans(store, FakeBackend)
    assert recovered.state is ExecutionState.FAILED
    assert "before it started" in (store.get_execution(execution_id).error or "")


def test_a_live_owner_is_left_alone(store: Store, tmp_path: Path) -> None:
    connected: list[FakeBackend] = []

    def connect() -> FakeBackend:
        connected.append(FakeBackend())
        return connected[0]

    execution_id, _ = _orphan(store, tmp_path, Owner.here())
    assert recover_orphans(store, connect) == []
    assert connected == []  # nothing to recover: the engine is not even reached
    assert store.get_execution(execution_id).state is ExecutionState.RUNNING


def test_an_owner_on_another_host_is_orphaned_once_its_lease_expires(
    store: Store, tmp_path: Path, fast_leases: None
) -> None:
    elsewhere = Owner(host="another-machine", pid=1, token="t")
    execution_id, _ = _orphan(store, tmp_path, elsewhere)
    assert recover_orphans(store, FakeBackend) == []  # its heartbeat is fresh
    time.sleep(0.5)  # past RUNNER_LEASE_SECONDS without a heartbeat
    (recovered,) = recover_orphans(store, FakeBackend)
    assert recovered.execution_id == execution_id
    assert recovered.holder == "pid 1 on another-machine"


def test_an_orphan_with_a_running_task_can_be_handed_over_to_follow(
    store: Store, tmp_path: Path
) -> None:
    backend = FakeBackend({"work": Script(seconds=30)})
    execution_id, run_id = _orphan(store, tmp_path, _dead_owner())
    _container(backend, execution_id, run_id)
    handed = []
    assert recover_orphans(store, lambda: backend, follow=handed.append) == []
    assert [lease.execution_id for lease in handed] == [execution_id]
    assert store.get_execution(execution_id).state is ExecutionState.RUNNING  # untouched


def test_kill_of_an_orphan_kills_its_container_and_records_killed(
    store: Store, tmp_path: Path
) -> None:
    backend = FakeBackend({"work": Script(seconds=30)})
    execution_id, run_id = _orphan(store, tmp_path, _dead_owner())
    container_id = _container(backend, execution_id, run_id)

    state = api.kill_execution(execution_id, store=store, backend=backend, wait_s=5)

    assert state is ExecutionState.KILLED
    record = store.get_execution(execution_id)
    assert record.error == "killed by `runner kill`"
    assert record.task_runs[0].state is TaskState.KILLED
    assert container_id in backend.removed


def test_two_recoverers_take_an_orphan_once(store: Store, tmp_path: Path) -> None:
    execution_id, _ = _orphan(store, tmp_path, _dead_owner())
    (lease,) = [
        lease for lease in store.active_leases(lease_s=30) if lease.execution_id == execution_id
    ]
    assert store.take_lease(lease, Owner.here())
    assert not store.take_lease(lease, Owner.here())  # the compare-and-set failed


# -- the heartbeat -------------------------------------------------------------------------


def test_the_heartbeat_hears_a_kill_request(store: Store, tmp_path: Path) -> None:
    owner = Owner.here()
    execution_id, _ = _orphan(store, tmp_path, owner)
    stopped = threading.Event()
    reasons: list[str] = []

    def on_stop(reason: str) -> None:
        reasons.append(reason)
        stopped.set()

    with Heartbeat(store, execution_id, owner, on_stop, interval_s=0.05):
        assert store.heartbeat(execution_id, owner.token) is Beat.KEPT
        store.request_kill(execution_id)
        assert stopped.wait(5)
    assert reasons == ["killed by `runner kill`"]


def test_the_heartbeat_stops_a_runner_whose_lease_was_taken(store: Store, tmp_path: Path) -> None:
    owner = Owner.here()
    execution_id, _ = _orphan(store, tmp_path, owner)
    stopped = threading.Event()
    reasons: list[str] = []

    def on_stop(reason: str) -> None:
        reasons.append(reason)
        stopped.set()

    (lease,) = [
        lease for lease in store.active_leases(lease_s=30) if lease.execution_id == execution_id
    ]
    with Heartbeat(store, execution_id, owner, on_stop, interval_s=0.05):
        assert store.take_lease(lease, Owner(host="other", pid=2, token="other-token"))
        assert stopped.wait(5)
    assert len(reasons) == 1 and "took this execution over" in reasons[0]


# -- kill of a live run ----------------------------------------------------------------------


def test_kill_from_another_thread_ends_a_running_execution(
    store: Store, tmp_path: Path, fast_leases: None
) -> None:
    backend = FakeBackend({"work": Script(seconds=60)})
    flow = parse_flow(FLOW, path=tmp_path / "flow.yml")
    created: list[str] = []
    results = []
    runner = threading.Thread(
        target=lambda: results.append(
            api.run_flow(flow, store=store, backend=backend, on_created=created.append)
        )
    )
    runner.start()
    deadline = time.monotonic() + 30
    while not backend.started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert backend.started, "the task never started"

    state = api.kill_execution(created[0], store=store, backend=backend, wait_s=30)
    runner.join(30)

    assert state is ExecutionState.KILLED
    (result,) = results
    assert result.state is ExecutionState.KILLED
    assert [(t.task_id, t.state) for t in result.tasks] == [("work", TaskState.KILLED)]
    assert store.get_execution(created[0]).error == "killed by `runner kill`"
    assert backend.volumes == set()  # a kill removes the workspace


# -- runner gc -------------------------------------------------------------------------------------


def test_gc_removes_what_ended_executions_left_and_keeps_the_rest(
    store: Store, tmp_path: Path
) -> None:
    backend = FakeBackend({"work": Script(seconds=30)})
    ended, ended_run = _orphan(store, tmp_path, Owner.here())
    store.set_execution_state(ended, ExecutionState.FAILED)
    running, running_run = _orphan(store, tmp_path, Owner.here())
    stale = _container(backend, ended, ended_run)
    live = _container(backend, running, running_run)
    unknown = _container(backend, "f" * 32, 99)
    backend.volumes.update({f"fake-ws-{ended}", f"fake-ws-{running}"})

    dry = collect_garbage(store, backend, dry_run=True)
    assert {r.name for r in dry.removed} == {stale, f"fake-ws-{ended}"}
    assert backend.removed == [] and len(backend.volumes) == 2

    garbage = collect_garbage(store, backend)
    assert {r.name for r in garbage.removed} == {stale, f"fake-ws-{ended}"}
    assert (garbage.kept_active, garbage.kept_unknown) == (2, 1)  # a container and a volume
    assert backend.removed == [stale] and backend.volumes == {f"fake-ws-{running}"}
    assert live not in backend.removed and unknown not in backend.removed


def test_a_runner_that_lost_its_lease_kills_its_tasks_and_writes_nothing_more(
    store: Store, tmp_path: Path, fast_leases: None
) -> None:
    """Another process took the execution over (it found the lease expired while this
    one was paused): this one must not write a second outcome over the new owner's."""
    backend = FakeBackend({"work": Script(seconds=60)})
    flow = parse_flow(FLOW, path=tmp_path / "flow.yml")
    created: list[str] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            api.run_flow(flow, store=store, backend=backend, on_created=created.append)
        except BaseException as exc:
            errors.append(exc)

    runner = threading.Thread(target=run)
    runner.start()
    deadline = time.monotonic() + 30
    while not backend.started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert backend.started, "the task never started"
    (lease,) = store.active_leases(created[0], lease_s=30)
    assert store.take_lease(lease, Owner(host="other", pid=2, token="new-owner"))
    runner.join(30)

    assert not runner.is_alive()
    (error,) = errors
    assert isinstance(error, LeaseLostError) and "took this execution over" in str(error)
    record = store.get_execution(created[0])
    # Left as the new owner found it: neither KILLED nor FAILED written over its work.
    assert record.state is ExecutionState.RUNNING and record.error is None
    assert [run.state for run in record.task_runs] == [TaskState.RUNNING]
    assert backend.killed == ["c0000"]  # its task was killed
