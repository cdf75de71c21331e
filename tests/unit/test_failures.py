"""When things fail: retries, timeouts, allow_failure, `errors:` and `finally:`, against
the scripted FakeBackend; and the pure parsing of durations and memory sizes."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from runner.api import run_flow
from runner.backends.fake import FakeBackend, Script
from runner.durations import Duration, parse_duration, parse_memory
from runner.errors import FlowError
from runner.execution import ExecutionState, TaskState
from runner.flow import Retry
from runner.loader import parse_flow
from runner.store import Store
from runner.store.testing import InMemoryStore


@pytest.fixture
def store() -> Iterator[InMemoryStore]:
    with InMemoryStore() as s:
        yield s


def _load(text: str, tmp_path: Path):
    return parse_flow(text, path=tmp_path / "flow.yml")


def _rows(store: Store, execution_id: str) -> list[tuple[str, int, str]]:
    return [(r.task_id, r.attempt, r.state) for r in store.get_execution(execution_id).task_runs]


# --- durations and sizes ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30s", timedelta(seconds=30)),
        ("10m", timedelta(minutes=10)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        ("500ms", timedelta(milliseconds=500)),
        ("1.5h", timedelta(minutes=90)),
        (45, timedelta(seconds=45)),
        (0.25, timedelta(milliseconds=250)),
        ("12", timedelta(seconds=12)),
        ("PT10M", timedelta(minutes=10)),
        ("PT1H30M", timedelta(hours=1, minutes=30)),
        ("P1D", timedelta(days=1)),
        ("pt0.5s", timedelta(milliseconds=500)),
    ],
)
def test_durations_parse(text: object, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("10x", "'10x' is not a duration (use e.g. 30s"),
        ("", "'' is not a duration"),
        ("PT", "'PT' is not a duration"),
        ("P1M", "years and months have no fixed length"),
        (-3, "cannot be negative"),
        (True, "not True"),
    ],
)
def test_bad_durations_name_the_value(text: object, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        parse_duration(text)


def test_duration_keeps_what_the_user_wrote() -> None:
    assert Duration.parse("10m").text == "10m"
    assert Duration.parse(90).text == "90s"
    assert Duration.parse("2").text == "2s"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("512m", 512 * 1024**2),
        ("512M", 512 * 1024**2),
        ("1g", 1024**3),
        ("1.5GB", int(1.5 * 1024**3)),
        ("256MiB", 256 * 1024**2),
        ("8192kb", 8 * 1024**2),
        ("8192KiB", 8 * 1024**2),
        (10**9, 10**9),
    ],
)
def test_memory_sizes_parse(text: object, expected: int) -> None:
    assert parse_memory(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [("12q", "'12q' is not a memory size"), ("lots", "not a memory size"), ("1m", "minimum")],
)
def test_bad_memory_sizes_name_the_value(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_memory(text)


# --- retry arithmetic ---------------------------------------------------------------------


def test_backoff_delays_grow_and_are_capped() -> None:
    retry = Retry.model_validate({"attempts": 6, "delay": "2s", "backoff": 2.0, "max_delay": "10s"})
    assert [retry.delay_after(n) for n in range(1, 6)] == [2, 4, 8, 10, 10]


def test_full_jitter_stays_between_zero_and_the_delay() -> None:
    retry = Retry.model_validate({"attempts": 3, "delay": "4s", "backoff": 3, "jitter": True})
    assert retry.delay_after(2, rand=lambda: 0.0) == 0
    assert retry.delay_after(2, rand=lambda: 0.5) == 6
    delays = [retry.delay_after(1) for _ in range(200)]
    assert all(0 <= d <= 4 for d in delays) and len(set(delays)) > 1


def test_retries_follow_attempts_and_exit_codes() -> None:
    retry = Retry.model_validate({"attempts": 3, "on_exit_codes": [1, 137]})
    assert retry.retries(1, 1) and retry.retries(2, 137)
    assert not retry.retries(3, 1)  # the last attempt
    assert not retry.retries(1, 3)  # not in the list
    assert not retry.retries(1, None)  # a timeout has no exit code of its own
    assert Retry.model_validate({"attempts": 2}).retries(1, None)


# --- the scheduler ------------------------------------------------------------------------


def test_failed_attempts_are_retried_each_in_its_own_row(store: Store, tmp_path: Path) -> None:
    backend = FakeBackend({"flaky": Script(exit_codes=(1, 1, 0))})
    flow = _load(
        "id: f\ntasks:\n- {id: flaky, image: i, retry: {attempts: 3, delay: 10ms}}\n"
        "- {id: after, image: i}\n",
        tmp_path,
    )
    result = run_flow(flow, store=store, backend=backend)
    assert result.state is ExecutionState.SUCCESS
    assert _rows(store, result.execution_id) == [
        ("flaky", 1, "RETRYING"),
        ("flaky", 2, "RETRYING"),
        ("flaky", 3, "SUCCESS"),
        ("after", 1, "SUCCESS"),
    ]
    assert [s.env["RUNNER_ATTEMPT"] for s in backend.started][:3] == ["1", "2", "3"]


def test_the_last_failed_attempt_is_failed(store: Store, tmp_path: Path) -> None:
    backend = FakeBackend({"bad": Script(exit_code=1)})
    flow = _load(
        "id: f\ndefaults: {retry: {attempts: 2, delay: 0s}}\ntasks:\n- {id: bad, image: i}\n",
        tmp_path,
    )
    result = run_flow(flow, store=store, backend=backend)
    assert result.state is ExecutionState.FAILED
    assert _rows(store, result.execution_id) == [("bad", 1, "RETRYING"), ("bad", 2, "FAILED")]
    assert result.tasks[0].attempt == 2


def test_exit_codes_outside_on_exit_codes_are_not_retried(store: Store, tmp_path: Path) -> None:
    backend = FakeBackend({"bad": Script(exit_codes=(1, 3))})
    flow = _load(
        "id: f\ntasks:\n- {id: bad, image: i, retry: {attempts: 5, delay: 0s, on_exit_codes: [1]}}\n",
        tmp_path,
    )
    result = run_flow(flow, store=store, backend=backend)
    assert _rows(store, result.execution_id) == [("bad", 1, "RETRYING"), ("bad", 2, "FAILED")]


def test_a_template_that_fails_to_render_is_not_retried(store: Store, tmp_path: Path) -> None:
    """Rendered again it would fail again: one attempt, FAILED, no container started."""
    backend = FakeBackend()
    flow = _load(
        "id: f\ntasks:\n"
        "- {id: bad, image: i, retry: {attempts: 3, delay: 0s}, command: \"{{ 1 // 0 }}\"}\n",
        tmp_path,
    )
    result = run_flow(flow, store=store, backend=backend)
    assert _rows(store, result.execution_id) == [("bad", 1, "FAILED")]
    assert "ZeroDivisionError" in (result.tasks[0].error or "") and backend.started == []


def test_cancel_ends_a_retry_delay(store: Store, tmp_path: Path) -> None:
    import threading

    from runner.scheduler import RunOptions, Scheduler
    from runner.store import LogWriter

    flow = _load(
        "id: f\ntasks:\n- {id: bad, image: i, retry: {attempts: 3, delay: 1h}}\n", tmp_path
    )
    store.create_execution(
        execution_id="y" * 32,
        flow_id="f",
        namespace="default",
        revision="r",
        source="",
        inputs={},
        labels={},
    )
    writer = LogWriter(store)
    scheduler = Scheduler(FakeBackend({"bad": Script(exit_code=1)}), store, writer)
    threading.Timer(0.3, scheduler.cancel).start()
    started = time.monotonic()
    result = scheduler.run("y" * 32, flow, {}, RunOptions(concurrency=1))
    writer.close()
    assert time.monotonic() - started < 3
    assert result.state is ExecutionState.KILLED
    assert _rows(store, "y" * 32) == [("bad", 1, "RETRYING"), ("bad", 2, "KILLED")]


def test_task_timeout_stops_the_container_and_may_be_retried(store: Store, tmp_path: Path) -> None:
    backend = FakeBackend({"slow": Script(seconds=30)})
    flow = _load(
        "id: f\ntasks:\n- {id: slow, image: i, timeout: 200ms, retry: {attempts: 2, delay: 0s}}\n",
        tmp_path,
    )
    started = time.monotonic()
    result = run_flow(flow, store=store, backend=backend)
    assert time.monotonic() - started < 5
    assert result.state is ExecutionState.FAILED
    runs = store.get_execution(result.execution_id).task_runs
    assert [(r.attempt, r.state, r.error) for r in runs] == [
        (1, "RETRYING", "timed out after 200ms"),
        (2, "FAILED", "timed out after 200ms"),
    ]
    assert len(backend.stopped) == 2


def test_flow_timeout_stops_running_tasks_and_starts_no_more(store: Store, tmp_path: Path) -> None:
    backend = FakeBackend({"slow": Script(seconds=30)})
    flow = _load(
        "id: f\ntimeout: 300ms\ntasks:\n- {id: quick, image: i}\n- {id: slow, image: i}\n"
        "- {id: never, image: i}\nfinally:\n- {id: report, image: i}\n",
        tmp_path,
    )
    started = time.monotonic()
    result = run_flow(flow, store=store, backend=backend)
    assert time.monotonic() - started < 5
    assert result.state is ExecutionState.FAILED
    record = store.get_execution(result.execution_id)
    assert record.error == "execution timed out after 300ms"
    assert [(r.task_id, r.state) for r in record.task_runs] == [
        ("quick", "SUCCESS"),
        ("slow", "KILLED"),
        ("never", "SKIPPED"),
        ("report", "SUCCESS"),  # finally: still runs, to report the timeout
    ]
    assert record.task_runs[1].error == "stopped: execution timed out after 300ms"


def test_allow_failure_ends_in_warning_and_dependents_run(store: Store, tmp_path: Path) -> None:
    backend = FakeBackend({"lint": Script(lines=("::set-output score=3",), exit_code=2)})
    flow = _load(
        "id: f\ndefaults: {image: i}\ntasks:\n- {id: lint, allow_failure: true}\n"
        "- {id: build, depends_on: [lint]}\n",
        tmp_path,
    )
    result = run_flow(flow, store=store, backend=backend)
    assert result.state is ExecutionState.WARNING and result.ok
    assert {t.task_id: t.state for t in result.tasks} == {
        "lint": TaskState.FAILED,
        "build": TaskState.SUCCESS,
    }
    assert store.get_execution(result.execution_id).state == "WARNING"


def test_errors_then_finally_run_after_a_failure(store: Store, tmp_path: Path) -> None:
    backend = FakeBackend({"bad": Script(exit_code=1), "alert": Script(exit_code=5)})
    flow = _load(
        """
id: f
defaults: {image: i}
tasks:
  - {id: bad}
  - {id: skipped}
errors:
  - {id: alert, command: 'echo {{ execution.failed_tasks | join(",") }}'}
  - {id: page}
finally:
  - {id: cleanup, command: 'echo {{ execution.state }}'}
""",
        tmp_path,
    )
    result = run_flow(flow, store=store, backend=backend)
    assert result.state is ExecutionState.FAILED
    assert [(t.task_id, t.state) for t in result.tasks] == [
        ("bad", TaskState.FAILED),
        ("skipped", TaskState.SKIPPED),
        ("alert", TaskState.FAILED),
        ("page", TaskState.SUCCESS),  # one handler failing does not skip the next
        ("cleanup", TaskState.SUCCESS),
    ]
    commands = {s.env["RUNNER_TASK_ID"]: s.command for s in backend.started}
    assert commands["alert"] == ("/bin/sh", "-c", "echo bad")
    assert commands["cleanup"] == ("/bin/sh", "-c", "echo FAILED")


def test_only_finally_runs_after_success_and_its_failure_fails(
    store: Store, tmp_path: Path
) -> None:
    backend = FakeBackend({"cleanup": Script(exit_code=1)})
    flow = _load(
        "id: f\ndefaults: {image: i}\ntasks:\n- {id: ok}\nerrors:\n- {id: alert}\n"
        "finally:\n- {id: cleanup}\n",
        tmp_path,
    )
    result = run_flow(flow, store=store, backend=backend)
    assert [t.task_id for t in result.tasks] == ["ok", "cleanup"]
    assert result.state is ExecutionState.FAILED


def test_handlers_do_not_run_after_a_kill(store: Store, tmp_path: Path) -> None:
    import threading

    from runner.scheduler import RunOptions, Scheduler
    from runner.store import LogWriter

    flow = _load(
        "id: f\ndefaults: {image: i}\ntasks:\n- {id: slow}\nfinally:\n- {id: cleanup}\n",
        tmp_path,
    )
    store.create_execution(
        execution_id="z" * 32,
        flow_id="f",
        namespace="default",
        revision="r",
        source="",
        inputs={},
        labels={},
    )
    writer = LogWriter(store)
    scheduler = Scheduler(FakeBackend({"slow": Script(seconds=30)}), store, writer)
    threading.Timer(0.3, scheduler.cancel).start()
    result = scheduler.run("z" * 32, flow, {}, RunOptions(concurrency=1))
    writer.close()
    assert result.state is ExecutionState.KILLED
    assert [t.task_id for t in result.tasks] == ["slow"]


def test_resource_limits_reach_the_container_spec(store: Store, tmp_path: Path) -> None:
    backend = FakeBackend()
    flow = _load("id: f\ntasks:\n- {id: a, image: i, cpus: 1.5, memory: 512m}\n", tmp_path)
    run_flow(flow, store=store, backend=backend)
    assert backend.started[0].cpus == 1.5
    assert backend.started[0].memory_bytes == 512 * 1024**2


# --- validation ---------------------------------------------------------------------------


def _problems(text: str, tmp_path: Path) -> str:
    with pytest.raises(FlowError) as info:
        _load(text, tmp_path)
    return str(info.value)


def test_bad_values_are_reported_with_their_line(tmp_path: Path) -> None:
    text = """id: f
timeout: soon
defaults: {image: i}
tasks:
  - id: a
    retry: {attempts: 0, delay: 3 parsecs}
    timeout: 0s
    memory: 12q
    cpus: lots
errors:
  - {id: a}
finally:
  - {id: b, depends_on: [a], timeut: 1s}
"""
    message = _problems(text, tmp_path)
    assert ":2:" in message and "'soon' is not a duration" in message
    assert ":6:" in message and "'3 parsecs' is not a duration" in message
    assert "attempts: must be at least 1, got 0" in message
    assert ":7:" in message and "a timeout must be longer than zero, not '0s'" in message
    assert ":8:" in message and "'12q' is not a memory size" in message
    assert ":9:" in message and "cpus must be a number" in message
    assert "duplicate task id 'a' (first used by tasks[0])" in message
    assert "unknown field 'timeut' (did you mean 'timeout'?)" in message
    assert "`finally:` tasks cannot use depends_on: they run after all of `tasks`" in message


def test_handlers_cannot_depend_on_main_tasks(tmp_path: Path) -> None:
    text = "id: f\ndefaults: {image: i}\ntasks:\n- {id: a}\nfinally:\n- {id: b, depends_on: [a]}\n"
    message = _problems(text, tmp_path)
    assert ":6:" in message
    assert "`finally:` tasks cannot use depends_on" in message


def test_handler_templates_are_checked(tmp_path: Path) -> None:
    text = (
        "id: f\ndefaults: {image: i}\ntasks:\n- {id: a}\n"
        "errors:\n- {id: b, command: 'echo {{ execution.failed_taks }}'}\n"
    )
    message = _problems(text, tmp_path)
    assert (
        ":6:" in message and "failed_taks" in message and "did you mean 'failed_tasks'" in message
    )
