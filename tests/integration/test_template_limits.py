"""Templates over their budget or stopped from outside, with real containers and the CLI:
a render that would run for hours ends with the flow's `timeout:`, with `runner kill`
from another process and with SIGTERM, as a running container would; a render over its
size budget fails its task run with the reason; and `shell_quote` keeps a hostile input
one word in a real shell."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from runner.store import Store, open_store
from tests.integration.helpers import REPO, Cli, execution_id_of, labelled, write_flow

IMAGE = "debian:bookworm-slim"

# Nested loops: 10**10 iterations, hours, and not a byte of output.
BOMB = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"

FLOW = f"""
id: bomb
{{timeout}}
tasks:
  - id: before
    image: {IMAGE}
    command: echo before
  - id: bomb
    image: {IMAGE}
    depends_on: [before]
    script: |
      {BOMB}
      echo never
  - id: after
    image: {IMAGE}
    depends_on: [bomb]
    command: echo never
"""


@pytest.fixture
def store(cli: Cli) -> Iterator[Store]:
    opened = open_store(cli.db_url)
    yield opened
    opened.close()


@pytest.fixture
def long_template_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    """A template budget far longer than the test: what ends the render is the kill."""
    monkeypatch.setenv("RUNNER_TEMPLATE_TIMEOUT", "600")


def _wait_for(what: str, check: Callable[[], bool], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def _rendering(store: Store) -> Callable[[], bool]:
    """Whether the only execution has a task run of `bomb`: made just before rendering."""

    def check() -> bool:
        found = store.list_executions().items
        return bool(found) and any(
            run.task_id == "bomb" for run in store.get_execution(found[0].id).task_runs
        )

    return check


def _runs(store: Store, execution_id: str) -> dict[str, tuple[str, str | None]]:
    return {
        run.task_id: (run.state.value, run.error)
        for run in store.get_execution(execution_id).task_runs
    }


def test_the_flow_timeout_ends_a_render(
    cli: Cli, store: Store, tmp_path: Path, docker_client: Any, long_template_budget: None
) -> None:
    flow = write_flow(
        tmp_path,
        f"id: bomb\ntimeout: 3s\ntasks:\n- {{id: bomb, image: {IMAGE}, script: '{BOMB}'}}\n"
        f"- {{id: after, image: {IMAGE}, depends_on: [bomb], command: echo never}}\n",
    )
    begun = time.monotonic()
    out = cli("run", str(flow), timeout=120)
    took = time.monotonic() - begun
    assert out.returncode == 1, out.stderr
    # The render alone would take hours; its own budget is 600 s (see the fixture).
    assert took < 60, f"the run took {took:.1f}s"
    execution_id = execution_id_of(out.stdout)
    record = store.get_execution(execution_id)
    assert record.state.value == "FAILED"
    assert record.error == "execution timed out after 3s"
    assert _runs(store, execution_id) == {
        "bomb": ("KILLED", "stopped: execution timed out after 3s"),
        "after": ("SKIPPED", "upstream task 'bomb' killed"),
    }
    containers, volumes = labelled(docker_client, execution_id)
    assert containers == [] and len(volumes) == 1  # a failed execution keeps its workspace
    docker_client.volumes.get(volumes[0].name).remove()


def test_runner_kill_from_another_process_ends_a_render(
    cli: Cli, store: Store, tmp_path: Path, docker_client: Any, long_template_budget: None
) -> None:
    flow = write_flow(tmp_path, FLOW.replace("{timeout}", ""))
    proc = cli.popen("run", str(flow))
    try:
        _wait_for("the render to start", _rendering(store))
        execution_id = store.list_executions().items[0].id
        begun = time.monotonic()
        killed = cli("kill", execution_id[:8])
        assert killed.returncode == 0, killed.stderr
        _, err = proc.communicate(timeout=60)
        # Seen at the owner's next heartbeat (2 s), then at the render's next check; the
        # render alone would take hours, its own budget is 600 s. (Starting `runner kill`
        # takes seconds on a busy machine.)
        assert time.monotonic() - begun < 60
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    record = store.get_execution(execution_id)
    assert (record.state.value, record.error) == ("KILLED", "killed by `runner kill`")
    assert _runs(store, execution_id) == {
        "before": ("SUCCESS", None),
        "bomb": ("KILLED", "killed by `runner kill`"),
    }
    assert labelled(docker_client, execution_id) == ([], [])


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_ends_a_render(
    cli: Cli,
    store: Store,
    tmp_path: Path,
    docker_client: Any,
    long_template_budget: None,
    sig: signal.Signals,
) -> None:
    flow = write_flow(tmp_path, FLOW.replace("{timeout}", ""))
    proc = cli.popen("run", str(flow))
    try:
        _wait_for("the render to start", _rendering(store))
        begun = time.monotonic()
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
        assert time.monotonic() - begun < 60  # the render alone: hours
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    execution_id = store.list_executions().items[0].id
    assert store.get_execution(execution_id).state.value == "KILLED"
    assert _runs(store, execution_id)["bomb"][0] == "KILLED"
    assert labelled(docker_client, execution_id) == ([], [])


def test_a_template_over_its_budget_fails_its_task_run(
    cli: Cli, store: Store, tmp_path: Path, docker_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RUNNER_TEMPLATE_TIMEOUT", "1")
    flow = write_flow(
        tmp_path,
        f"""
id: budget
tasks:
  - id: fine
    image: {IMAGE}
    command: "echo {{{{ 'x' * 10 }}}}"
  - id: slow
    image: {IMAGE}
    depends_on: [fine]
    script: "{BOMB}"
  - id: big
    image: {IMAGE}
    depends_on: [fine]
    command: "echo {{% for i in range(2000) %}}{{{{ 'x' * 1000 }}}}{{% endfor %}}"
""",
    )
    out = cli("run", str(flow), timeout=120)
    assert out.returncode == 1, out.stderr
    execution_id = execution_id_of(out.stdout)
    for volume in labelled(docker_client, execution_id)[1]:  # kept: the execution failed
        volume.remove()
    runs = _runs(store, execution_id)
    assert runs["slow"] == (
        "FAILED",
        f"script: template took longer than 1s (RUNNER_TEMPLATE_TIMEOUT); it was at {BOMB}",
    )
    assert runs["big"] == (
        "FAILED",
        "command: template too large: it renders more than 1 MiB (RUNNER_TEMPLATE_MAX_BYTES)",
    )
    assert runs["fine"] == ("SUCCESS", None)


def test_shell_quote_keeps_a_hostile_input_one_word(cli: Cli, tmp_path: Path) -> None:
    marker = tmp_path / "injected"
    hostile = "O'Brien; touch /tmp/injected; echo $(id -u) `id -u` > /dev/null"
    out = cli("run", str(REPO / "flows" / "greet.yml"), "-i", f"name={hostile}")
    assert out.returncode == 0, out.stderr
    execution_id = execution_id_of(out.stdout)
    logs = cli("logs", execution_id)
    assert logs.stdout.strip().endswith(f"Hello, {hostile}!"), logs.stdout
    assert not marker.exists()


def test_validate_flows_have_no_shell_warnings() -> None:
    # The examples practise what `runner validate` preaches.
    completed = subprocess.run(
        ["python", "-c", "from runner.loader import load_flow; import sys; "
         "print(sum(len(load_flow(p).warnings) for p in sys.argv[1:]))",
         *map(str, sorted((REPO / "flows").glob("*.yml")))],
        capture_output=True, text=True, check=True, cwd=REPO,
    )  # fmt: skip
    assert completed.stdout.strip() == "0"
