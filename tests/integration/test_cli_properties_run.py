"""`runner run` of mutated flows that pass validation, with real containers: whatever the
flow and its input values hold, the command ends with exit 0, 1 or 2 and a message,
never a traceback.

The flows and inputs are made as in tests/unit/test_cli_properties.py (which covers what
validation rejects); here only those that validate are run, each through
`python -m runner` as a user would. Runs are kept short: a flow must keep a `timeout:` of
at most 30 s (its `errors:` and `finally:` tasks one of their own) and a small matrix."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from runner.errors import RunnerError
from runner.inputs import parse_input_args, resolve_inputs
from runner.loader import LoadedFlow, load_flow
from tests.integration.helpers import Cli
from tests.unit.test_cli_properties import input_values, mutated_flows

QUICK = """\
id: quick
namespace: props
timeout: 20s
env: {GREETING: hello}
defaults: {image: debian:bookworm-slim, timeout: 10s}
inputs:
  - {id: n, type: int, default: 2}
  - {id: word, type: string, default: hi}
tasks:
  - id: first
    command: "echo {{ inputs.word | shquote }} $GREETING"
  - id: second
    depends_on: [first]
    script: |
      echo '::{"outputs": {"n": {{ inputs.n }}}}::'
      printf 'caf\\303\\251 \\377 done\\r\\n'
      echo "$RUNNER_TASK_ID" >&2
finally:
  - {id: last, command: "echo {{ execution.state }} {{ outputs.second.n }}"}
"""

MATRIX = """\
id: matrix
namespace: props
timeout: 20s
defaults: {image: debian:bookworm-slim, timeout: 10s}
tasks:
  - id: each
    matrix: {a: [1, 2]}
    when: "{{ matrix.a > 0 }}"
    command: ["sh", "-c", "echo {{ matrix.a }}; mkdir -p out && echo x > out/{{ matrix.a }}.txt"]
    artifacts: ["out/*.txt"]
  - id: after
    depends_on: [each]
    command: "exit 3"
    allow_failure: true
errors:
  - {id: alert, command: "echo failed: {{ execution.failed_tasks | join(',') }}"}
"""

RETRY = """\
id: retry
namespace: props
timeout: 20s
defaults:
  image: debian:bookworm-slim
  timeout: 10s
  retry: {attempts: 2, delay: 100ms, on_exit_codes: [1]}
tasks:
  - id: flaky
    script: |
      test "$RUNNER_ATTEMPT" -gt 1
"""

TRACEBACK = "Traceback (most recent call last)"
_ENDLESS = re.compile(r"\byes\b")  # `command: yes` is valid, and prints forever


def quick_to_run(loaded: LoadedFlow) -> bool:
    """Whether the flow ends within seconds and leaves nothing on the engine but what the
    execution's labels find."""
    flow = loaded.flow
    if flow.timeout is None or flow.timeout.seconds > 30:
        return False
    for task in flow.all_tasks:
        if task.volumes:  # a named volume would outlive the test
            return False
        if _ENDLESS.search(f"{task.command} {task.script}"):
            return False
        combinations = 1
        for values in (task.matrix or {}).values():
            combinations *= len(values)
        if combinations > 4:
            return False
    for task in (*flow.errors, *flow.finally_):  # the flow's timeout does not bound them
        if task.timeout is None or task.timeout.seconds > 10:
            return False
        if task.retry is not None and task.retry.attempts > 2:
            return False
    return True


def forget(docker_client: Any, stdout: str) -> None:
    """Remove what the execution left: a failed one keeps its workspace."""
    first = stdout.splitlines()[0] if stdout else ""
    if not first.startswith("execution "):
        return
    label = f"io.runner.execution={first.split()[1]}"
    for container in docker_client.containers.list(all=True, filters={"label": label}):
        container.remove(force=True, v=True)
    for volume in docker_client.volumes.list(filters={"label": label}):
        volume.remove(force=True)


input_args = st.lists(
    st.tuples(st.sampled_from(["n", "word"]), input_values).map(lambda pair: "=".join(pair)),
    max_size=2,
    unique_by=lambda arg: arg.split("=", 1)[0],
)


@settings(
    max_examples=12,
    deadline=None,
    database=None,  # no .hypothesis/ folder in the working tree; failures print their example
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
        HealthCheck.function_scoped_fixture,  # one folder for all examples: each rewrites it
    ],
)
@given(content=mutated_flows(seeds=(QUICK, MATRIX, RETRY)), inputs=input_args)
def test_run_of_a_valid_mutated_flow_ends_cleanly(
    cli: Cli, tmp_path: Path, docker_client: Any, content: bytes, inputs: list[str]
) -> None:
    flow = tmp_path / "flow.yml"
    flow.write_bytes(content)
    try:
        loaded = load_flow(flow)
        resolve_inputs(loaded, parse_input_args(inputs))
    except RunnerError:
        assume(False)  # rejected before anything runs: the unit properties cover it
    assume(quick_to_run(loaded))
    args = ["run", str(flow), "--artifacts-dir", str(tmp_path / "artifacts")]
    for value in inputs:
        args += ["-i", value]

    out = cli(*args, timeout=120)
    forget(docker_client, out.stdout)

    said = f"exit {out.returncode}\nstdout:\n{out.stdout}\nstderr:\n{out.stderr}"
    assert TRACEBACK not in out.stdout + out.stderr, said
    assert "internal error" not in out.stderr, said
    assert out.returncode in (0, 1, 2), said
    assert (out.stdout if out.returncode == 0 else out.stderr).strip(), said
