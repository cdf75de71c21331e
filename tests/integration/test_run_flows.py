"""End to end through the `runner` command, with real containers and a SQLite store."""

from __future__ import annotations

import json
import signal
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tests.integration.helpers import REPO, Cli, execution_id_of, labelled, run_ok, write_flow


def test_hello_flow_runs_and_is_recorded(cli: Cli, docker_client: Any) -> None:
    out = cli("run", str(REPO / "flows/hello.yml"))
    assert out.returncode == 0, out.stderr
    execution_id = execution_id_of(out.stdout)
    assert "SUCCESS" in out.stdout  # the summary table
    assert "Hello from" in out.stderr  # live task output
    shown = cli.show(execution_id[:8])  # a prefix is enough
    assert (
        shown["id"] == execution_id and shown["flow_id"] == "hello" and shown["state"] == "SUCCESS"
    )
    assert [
        (r["task_id"], r["attempt"], r["state"], r["exit_code"]) for r in shown["task_runs"]
    ] == [("hello", 1, "SUCCESS", 0)]
    run = shown["task_runs"][0]
    assert datetime.fromisoformat(run["started_at"]) <= datetime.fromisoformat(run["ended_at"])
    logs = cli("logs", execution_id)
    assert f"execution {execution_id}" in logs.stdout
    assert "task hello, attempt 1, workspace /workspace" in logs.stdout
    assert labelled(docker_client, execution_id) == ([], [])


def test_fanout_join_example(cli: Cli) -> None:
    execution_id = run_ok(cli, ["run", str(REPO / "flows/fanout_join.yml")])
    logs = json.loads(cli("logs", execution_id, "--task", "join", "--json").stdout)
    assert [ln["line"] for ln in logs] == ["total: 1501500"]


def _intervals(shown: dict[str, Any], prefix: str) -> list[tuple[datetime, datetime]]:
    return [
        (datetime.fromisoformat(r["started_at"]), datetime.fromisoformat(r["ended_at"]))
        for r in shown["task_runs"]
        if r["task_id"].startswith(prefix)
    ]


def test_fan_out_of_six_runs_concurrently(cli: Cli, tmp_path: Path) -> None:
    tasks = "".join(
        f"  - {{id: w{i}, depends_on: [start], command: 'sleep 3; echo done {i}'}}\n"
        for i in range(6)
    )
    flow = write_flow(
        tmp_path,
        "id: fan\nconcurrency: 6\ndefaults: {image: debian:bookworm-slim}\ntasks:\n"
        "  - {id: start, command: 'true'}\n" + tasks,
    )
    execution_id = run_ok(cli, ["run", str(flow)])
    intervals = _intervals(cli.show(execution_id), "w")
    assert len(intervals) == 6
    # Every pair of workers overlaps in time: they ran side by side, not one after another.
    latest_start = max(s for s, _ in intervals)
    earliest_end = min(e for _, e in intervals)
    assert latest_start < earliest_end, intervals


def test_failure_skips_downstream_and_independent_branch_finishes(
    cli: Cli, tmp_path: Path, docker_client: Any
) -> None:
    flow = write_flow(
        tmp_path,
        """
id: branches
defaults: {image: debian:bookworm-slim}
tasks:
  - {id: broken, command: "echo about to fail >&2; exit 3"}
  - {id: after_broken, depends_on: [broken], command: "echo never"}
  - {id: other, command: "sleep 1; echo other side"}
  - {id: after_other, depends_on: [other], command: "echo still runs"}
""",
    )
    out = cli("run", str(flow))
    assert out.returncode == 1, out.stderr
    execution_id = execution_id_of(out.stdout)
    shown = cli.show(execution_id)
    states = {r["task_id"]: (r["state"], r["exit_code"]) for r in shown["task_runs"]}
    assert shown["state"] == "FAILED"
    assert states == {
        "broken": ("FAILED", 3),
        "after_broken": ("SKIPPED", None),
        "other": ("SUCCESS", 0),
        "after_other": ("SUCCESS", 0),
    }
    stderr_lines = json.loads(cli("logs", execution_id, "--task", "broken", "--json").stdout)
    assert stderr_lines == [{**stderr_lines[0], "stream": "stderr", "line": "about to fail"}]
    containers, volumes = labelled(docker_client, execution_id)
    assert containers == []
    assert len(volumes) == 1  # the workspace is kept after a failure, for inspection
    volumes[0].remove(force=True)


def test_every_line_of_a_chatty_task_is_stored(cli: Cli, tmp_path: Path) -> None:
    flow = write_flow(
        tmp_path,
        "id: chatty\ntasks:\n  - id: talk\n    image: debian:bookworm-slim\n"
        "    command: \"seq 1 100000; printf 'last line without newline'\"\n",
    )
    execution_id = run_ok(cli, ["run", str(flow), "--log-format", "json"])
    out = cli("logs", execution_id, "--json")
    assert out.returncode == 0, out.stderr
    lines = json.loads(out.stdout)
    assert len(lines) == 100_001
    assert [ln["line"] for ln in lines[:3]] == ["1", "2", "3"]
    assert lines[99_999]["line"] == "100000"
    assert lines[-1]["line"] == "last line without newline"


def test_json_log_format_is_one_object_a_line(cli: Cli, tmp_path: Path) -> None:
    flow = write_flow(
        tmp_path, "id: j\ntasks:\n  - {id: say, image: debian:bookworm-slim, command: 'echo hi'}\n"
    )
    out = cli("run", str(flow), "--log-format", "json")
    assert out.returncode == 0, out.stderr
    events = [json.loads(line) for line in out.stderr.splitlines() if line.strip()]
    task_lines = [e for e in events if e["event"] == "task_log"]
    assert (
        task_lines[0]["line"] == "hi"
        and task_lines[0]["task_id"] == "say"
        and task_lines[0]["stream"] == "stdout"
    )
    assert {"execution_started", "task_started", "task_finished", "execution_finished"} <= {
        e["event"] for e in events
    }


def test_non_root_user_shares_the_workspace(cli: Cli, tmp_path: Path) -> None:
    flow = write_flow(
        tmp_path,
        """
id: users
defaults: {image: debian:bookworm-slim}
tasks:
  - {id: write, user: "1000:1000", command: "id -u > owner.txt"}
  - {id: read, command: "cat owner.txt"}
""",
    )
    execution_id = run_ok(cli, ["run", str(flow)])
    assert [
        ln["line"]
        for ln in json.loads(cli("logs", execution_id, "--task", "read", "--json").stdout)
    ] == ["1000"]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_interrupt_kills_and_leaves_nothing_behind(
    cli: Cli, tmp_path: Path, docker_client: Any, sig: int
) -> None:
    flow = write_flow(
        tmp_path,
        """
id: long
defaults: {image: debian:bookworm-slim}
tasks:
  - {id: one, command: "echo started; sleep 300"}
  - {id: two, command: "sleep 300"}
  - {id: after, depends_on: [one, two], command: "echo never"}
""",
    )
    proc = cli.popen("run", str(flow))
    assert proc.stdout is not None
    execution_id = execution_id_of(proc.stdout.readline())
    deadline = time.monotonic() + 60
    while len(labelled(docker_client, execution_id)[0]) < 2:
        assert time.monotonic() < deadline, "containers never started"
        time.sleep(0.2)
    time.sleep(0.5)
    sent = time.monotonic()
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert time.monotonic() - sent < 20
    assert labelled(docker_client, execution_id) == ([], [])
    shown = cli.show(execution_id)
    assert shown["state"] == "KILLED"
    assert {r["task_id"]: r["state"] for r in shown["task_runs"]} == {
        "one": "KILLED",
        "two": "KILLED",
    }
    assert [
        ln["line"] for ln in json.loads(cli("logs", execution_id, "--task", "one", "--json").stdout)
    ] == ["started"]


def test_unreachable_engine_is_one_clear_line(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    flow = write_flow(
        tmp_path, "id: x\ntasks:\n  - {id: a, image: debian:bookworm-slim, command: 'true'}\n"
    )
    monkeypatch.setenv("DOCKER_HOST", "tcp://127.0.0.1:1")
    monkeypatch.setenv("RUNNER_ENGINE_WAIT_SECONDS", "0")  # a TCP engine is waited for
    out = cli("run", str(flow))
    assert out.returncode == 1
    assert "Traceback" not in out.stderr
    assert "127.0.0.1:1" in out.stderr and "error:" in out.stderr


def test_invalid_flow_and_inputs_exit_2_naming_file_and_line(cli: Cli, tmp_path: Path) -> None:
    flow = write_flow(
        tmp_path,
        "id: bad\ninputs:\n  - {id: n, type: int}\ntasks:\n  - id: a\n    imagee: debian:bookworm-slim\n",
    )
    out = cli("validate", str(flow))
    assert out.returncode == 2
    assert "flow.yml:6" in out.stderr and "did you mean 'image'" in out.stderr
    assert "Traceback" not in out.stderr
    good = write_flow(
        tmp_path,
        "id: ok\ninputs:\n  - {id: n, type: int}\ntasks:\n  - {id: a, image: i}\n",
        "ok.yml",
    )
    out = cli("run", str(good), "-i", "n=abc")
    assert out.returncode == 2 and "input 'n'" in out.stderr and "Traceback" not in out.stderr
    out = cli("run", str(good), "-i", "novalue")
    assert out.returncode == 2 and "novalue" in out.stderr
    out = cli("run", str(tmp_path / "missing.yml"))
    assert out.returncode == 2 and "missing.yml" in out.stderr
    out = cli("run", str(good), "--concurrency", "0")
    assert out.returncode == 2


def test_executions_lists_newest_first(cli: Cli, tmp_path: Path) -> None:
    flow = write_flow(
        tmp_path, "id: twice\ntasks:\n  - {id: a, image: debian:bookworm-slim, command: 'true'}\n"
    )
    first = run_ok(cli, ["run", str(flow)])
    second = run_ok(cli, ["run", str(flow)])
    listed = json.loads(cli("executions", "--flow", "twice", "--json").stdout)
    assert [e["id"] for e in listed] == [second, first]
    assert json.loads(cli("executions", "--state", "FAILED", "--json").stdout) == []
    table = cli("executions").stdout
    assert second in table and "SUCCESS" in table
