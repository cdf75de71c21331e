"""Leases are decided by one clock, the database's: runner processes whose clocks disagree
by 45 s, sharing one PostgreSQL database, still agree on who holds an execution.

The other process runs under Debian's `faketime` (libfaketime), which shifts the clock a
program sees; the database server keeps the true time. Needs RUNNER_TEST_POSTGRES_URL and
the `faketime` command (.ci/prepare.sh installs it); skipped locally without them, a
failure in CI.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from runner.execution import ExecutionState, TaskState
from runner.lease import Heartbeat, Owner
from runner.recovery import expired_leases
from runner.settings import DATABASE_URL_ENV
from runner.store import Store, open_store
from tests.conftest import missing_service

pytestmark = pytest.mark.postgres

SKEW_S = 45  # more than the 30 s lease
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def faketime() -> str:
    found = shutil.which("faketime")
    if found is None:
        missing_service("the faketime command is not installed (apt-get install faketime)")
        raise AssertionError("unreachable")
    return found


def shifted(faketime: str, seconds: int, *args: str) -> list[str]:
    """A command line running `python args...` with its clock `seconds` off."""
    return [faketime, "-f", f"{seconds:+d}s", sys.executable, *args]


def environment(database_url: str) -> dict[str, str]:
    return {
        **os.environ,
        DATABASE_URL_ENV: database_url,
        "PYTHONPATH": str(ROOT),
        "RUNNER_LEASE_SECONDS": "30",
        "RUNNER_HEARTBEAT_SECONDS": "1",
    }


def test_faketime_shifts_the_clock_of_python(faketime: str) -> None:
    """Without this, the tests below would prove nothing."""
    out = subprocess.run(
        shifted(faketime, SKEW_S, "-c", "import time; print(time.time())"),
        capture_output=True,
        text=True,
        check=True,
    )
    assert float(out.stdout) - time.time() > SKEW_S - 5


@pytest.fixture
def store(postgres_database_url: str) -> Iterator[Store]:
    with open_store(postgres_database_url) as opened:
        yield opened


def test_a_runner_whose_clock_is_ahead_does_not_take_over_a_healthy_execution(
    faketime: str, store: Store, postgres_database_url: str
) -> None:
    owner = Owner("another-machine", 4242, uuid.uuid4().hex, boot_id="another-boot")
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
    )
    store.set_execution_state(execution_id, ExecutionState.RUNNING)
    run_id = store.create_task_run(execution_id=execution_id, task_id="a", attempt=1, image="i")
    stops: list[str] = []
    # The owner is alive: it renews its lease every 10 s (seldom, so that a renewal in
    # the middle of a take-over cannot hide one), on the true clock.
    with Heartbeat(store, execution_id, owner, stops.append, interval_s=10, lease_s=30):
        listed = subprocess.run(
            shifted(faketime, SKEW_S, "-m", "runner", "executions"),
            capture_output=True,
            text=True,
            env=environment(postgres_database_url),
            timeout=120,
        )
        assert listed.returncode == 0, listed.stderr
        assert "recovered" not in listed.stderr and "died" not in listed.stderr, listed.stderr
        assert execution_id in listed.stdout
        (lease,) = store.active_leases(execution_id, lease_s=30)
        assert lease.token == owner.token and not lease.expired
    assert stops == []
    record = store.get_execution(execution_id)
    assert record.state is ExecutionState.RUNNING
    assert [(r.id, r.state) for r in record.task_runs] == [(run_id, TaskState.CREATED)]


OWNER_SCRIPT = textwrap.dedent(
    """
    import sys, time, uuid
    from runner.execution import ExecutionState
    from runner.lease import Heartbeat, Owner
    from runner.store import open_store

    store = open_store()
    owner = Owner.here()
    execution_id = uuid.uuid4().hex
    store.create_execution(
        execution_id=execution_id, flow_id="f", namespace="default", revision="r",
        source="", inputs={}, labels={}, owner=owner,
    )
    store.set_execution_state(execution_id, ExecutionState.RUNNING)
    stopped = []
    with Heartbeat(store, execution_id, owner, stopped.append, interval_s=1, lease_s=30):
        print(execution_id, flush=True)
        sys.stdin.read()  # until the test closes it
    print("stopped:", stopped, flush=True)
    """
)


def test_an_owner_whose_clock_is_behind_keeps_its_lease(
    faketime: str, store: Store, postgres_database_url: str, tmp_path: Path
) -> None:
    errors = tmp_path / "owner.err"
    with (
        errors.open("w") as err,
        subprocess.Popen(
            shifted(faketime, -SKEW_S, "-c", OWNER_SCRIPT),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            env=environment(postgres_database_url),
        ) as owner,
    ):
        assert owner.stdout is not None and owner.stdin is not None
        try:
            line: list[str] = []
            reader = threading.Thread(target=lambda: line.append(owner.stdout.readline()))  # type: ignore[union-attr]
            reader.start()
            reader.join(60)
            assert line and line[0].strip(), errors.read_text()
            execution_id = line[0].strip()
            time.sleep(2.5)  # a few heartbeats, each stamped by the database
            (lease,) = store.active_leases(execution_id, lease_s=30)
            assert not lease.expired
            assert expired_leases(store) == []
            listed = subprocess.run(
                [sys.executable, "-m", "runner", "executions"],
                capture_output=True,
                text=True,
                env=environment(postgres_database_url),
                timeout=120,
            )
            assert listed.returncode == 0, listed.stderr
            assert "recovered" not in listed.stderr, listed.stderr
            assert store.active_leases(execution_id, lease_s=30)[0].token == lease.token
            owner.stdin.close()  # the owner ends its run
            assert owner.wait(timeout=30) == 0, errors.read_text()
            assert "stopped: []" in owner.stdout.read()
        finally:
            if owner.poll() is None:
                owner.kill()
    assert store.get_execution(execution_id).state is ExecutionState.RUNNING
