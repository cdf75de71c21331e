"""When things fail, with real containers: retries and their delays, timeouts, the OOM
killer, `errors:` and `finally:`, allow_failure."""

from __future__ import annotations

import itertools
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from tests.integration.helpers import Cli, execution_id_of, write_flow

IMAGE = "debian:bookworm-slim"


def _run(cli: Cli, tmp_path: Path, text: str, *, expect: int = 1) -> dict[str, Any]:
    out = cli("run", str(write_flow(tmp_path, text)))
    assert out.returncode == expect, f"stdout:\n{out.stdout}\nstderr:\n{out.stderr}"
    return cli.show(execution_id_of(out.stdout))


def _times(run: dict[str, Any]) -> tuple[datetime, datetime]:
    return datetime.fromisoformat(run["started_at"]), datetime.fromisoformat(run["ended_at"])


def test_retries_wait_with_backoff(cli: Cli, tmp_path: Path) -> None:
    shown = _run(
        cli,
        tmp_path,
        f"id: r\ntasks:\n- id: flaky\n  image: {IMAGE}\n  command: exit 1\n"
        "  retry: {attempts: 3, delay: 1s, backoff: 2}\n",
    )
    runs = shown["task_runs"]
    assert [(r["attempt"], r["state"], r["exit_code"]) for r in runs] == [
        (1, "RETRYING", 1),
        (2, "RETRYING", 1),
        (3, "FAILED", 1),
    ]
    gaps = [
        (_times(later)[0] - _times(earlier)[1]).total_seconds()
        for earlier, later in itertools.pairwise(runs)
    ]
    # The delay, plus the time to create and start the next container.
    assert 1.0 <= gaps[0] < 2.5, gaps
    assert 2.0 <= gaps[1] < 3.5, gaps


def test_exit_code_outside_on_exit_codes_is_not_retried(cli: Cli, tmp_path: Path) -> None:
    shown = _run(
        cli,
        tmp_path,
        f"id: r\ntasks:\n- id: bad\n  image: {IMAGE}\n  command: exit 3\n"
        "  retry: {attempts: 3, delay: 1s, on_exit_codes: [1, 137]}\n",
    )
    assert [(r["attempt"], r["state"], r["exit_code"]) for r in shown["task_runs"]] == [
        (1, "FAILED", 3)
    ]


def test_timeout_stops_the_task(cli: Cli, tmp_path: Path) -> None:
    begun = time.monotonic()
    shown = _run(
        cli,
        tmp_path,
        f"id: t\ntasks:\n- {{id: sleepy, image: {IMAGE}, command: 'sleep 300', timeout: 2s}}\n",
    )
    assert time.monotonic() - begun < 15
    (run,) = shown["task_runs"]
    assert run["state"] == "FAILED" and run["error"] == "timed out after 2s"
    assert shown["state"] == "FAILED"


def test_out_of_memory_is_reported(cli: Cli, tmp_path: Path) -> None:
    shown = _run(
        cli,
        tmp_path,
        f"id: m\ntasks:\n- id: hog\n  image: {IMAGE}\n  memory: 16m\n"
        "  command: head -c 200m /dev/zero | tail\n",
    )
    (run,) = shown["task_runs"]
    assert run["state"] == "FAILED"
    assert run["error"] == "killed: out of memory (OOM, limit 16m)"


def test_errors_then_finally_run_after_the_failure(cli: Cli, tmp_path: Path) -> None:
    shown = _run(
        cli,
        tmp_path,
        f"""
id: h
defaults: {{image: {IMAGE}}}
tasks:
  - {{id: bad, command: 'sleep 1; exit 2'}}
errors:
  - {{id: alert, command: 'echo failed: {{{{ execution.failed_tasks | join(",") }}}}'}}
finally:
  - {{id: cleanup, command: 'echo {{{{ execution.state }}}}'}}
""",
    )
    runs = {r["task_id"]: r for r in shown["task_runs"]}
    assert [r["task_id"] for r in shown["task_runs"]] == ["bad", "alert", "cleanup"]
    assert _times(runs["bad"])[1] <= _times(runs["alert"])[0]
    assert _times(runs["alert"])[1] <= _times(runs["cleanup"])[0]
    assert runs["alert"]["state"] == runs["cleanup"]["state"] == "SUCCESS"
    logs = cli("logs", shown["id"]).stdout
    assert "failed: bad" in logs and "FAILED" in logs
    assert shown["state"] == "FAILED"


def test_allowed_failure_ends_in_warning(cli: Cli, tmp_path: Path) -> None:
    shown = _run(
        cli,
        tmp_path,
        f"""
id: w
defaults: {{image: {IMAGE}}}
tasks:
  - {{id: lint, command: 'exit 4', allow_failure: true}}
  - {{id: build, depends_on: [lint], command: 'true'}}
""",
        expect=0,
    )
    assert shown["state"] == "WARNING"
    assert [(r["task_id"], r["state"]) for r in shown["task_runs"]] == [
        ("lint", "FAILED"),
        ("build", "SUCCESS"),
    ]


def test_flow_timeout_stops_the_running_task_and_skips_the_rest(cli: Cli, tmp_path: Path) -> None:
    begun = time.monotonic()
    shown = _run(
        cli,
        tmp_path,
        f"id: ft\ntimeout: 2s\ntasks:\n- {{id: sleepy, image: {IMAGE}, command: 'sleep 300'}}\n"
        f"- {{id: later, image: {IMAGE}, command: 'echo never', depends_on: [sleepy]}}\n"
        f"finally:\n- {{id: report, image: {IMAGE}, command: 'echo {{{{ execution.state }}}}'}}\n",
    )
    # SIGTERM at 2 s; `sleep` under the init process ends at once
    assert time.monotonic() - begun < 20
    assert shown["state"] == "FAILED" and shown["error"] == "execution timed out after 2s"
    states = {r["task_id"]: (r["state"], r["error"]) for r in shown["task_runs"]}
    assert states["sleepy"] == ("KILLED", "stopped: execution timed out after 2s")
    assert states["later"] == ("SKIPPED", "upstream task 'sleepy' killed")
    assert states["report"][0] == "SUCCESS"  # handlers still run after a flow timeout
