"""What a flow may take from the host, with real containers: the Docker socket and host
paths (RUNNER_ALLOWED_MOUNTS), the host's network (RUNNER_ALLOW_HOST_NETWORK), the
runner's environment (--env, RUNNER_ALLOWED_ENV), and secrets that never show: not in
`runner logs`, `runner show` (text or --json), the console echo, nor the database file."""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

import pytest

from tests.integration.helpers import Cli, execution_id_of, labelled, run_ok, write_flow

IMAGE = "debian:bookworm-slim"


def _logs(cli: Cli, execution_id: str, task: str) -> list[str]:
    out = cli("logs", execution_id, "--task", task, "--json")
    assert out.returncode == 0, out.stderr
    return [line["line"] for line in json.loads(out.stdout)]


def _run(shown: dict[str, Any], task: str) -> dict[str, Any]:
    runs = [r for r in shown["task_runs"] if r["task_id"] == task]
    assert runs, shown
    return dict(runs[-1])


def _no_executions(cli: Cli) -> None:
    out = cli("executions", "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == []


def _remove_leftovers(docker_client: Any, execution_id: str) -> None:
    containers, volumes = labelled(docker_client, execution_id)
    for leftover in [*containers, *volumes]:
        leftover.remove(force=True)


# --- the Docker socket and host paths ------------------------------------------------------

SOCKET_FLOW = f"""\
id: engine-access
tasks:
  - id: escape
    image: {IMAGE}
    volumes:
      - /var/run/docker.sock:/var/run/docker.sock
    command: "test -S /var/run/docker.sock && echo socket"
"""


def test_a_flow_mounting_the_docker_socket_is_refused(cli: Cli, tmp_path: Path) -> None:
    flow = write_flow(tmp_path, SOCKET_FLOW)
    for command in ("validate", "run"):
        out = cli(command, str(flow))
        assert out.returncode == 2, out
        assert out.stderr.strip() == (
            f"{flow}:6:9: tasks[0] (escape).volumes[0]: volume"
            " '/var/run/docker.sock:/var/run/docker.sock': host path /var/run/docker.sock is"
            " the Docker socket, which gives control of the engine and so of the host; allow"
            " it by naming /var/run/docker.sock itself in RUNNER_ALLOWED_MOUNTS (* does not"
            " cover it)"
        )
    _no_executions(cli)


def test_a_star_does_not_allow_the_socket_naming_it_does(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    flow = write_flow(tmp_path, SOCKET_FLOW)
    monkeypatch.setenv("RUNNER_ALLOWED_MOUNTS", "*")
    assert cli("validate", str(flow)).returncode == 2
    monkeypatch.setenv("RUNNER_ALLOWED_MOUNTS", "/srv,/var/run/docker.sock")
    assert cli("validate", str(flow)).returncode == 0
    execution_id = run_ok(cli, ["run", str(flow)])
    assert _logs(cli, execution_id, "escape") == ["socket"]


def test_a_host_path_outside_the_flows_folder(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "data.txt").write_text("from the host\n")
    (tmp_path / "flows" / "data").mkdir(parents=True)
    (tmp_path / "flows" / "data" / "own.txt").write_text("from the flow's folder\n")
    flow = write_flow(
        tmp_path / "flows",
        f"""\
id: host-paths
tasks:
  - id: own
    image: {IMAGE}
    volumes: ["./data:/data:ro"]
    command: cat /data/own.txt
  - id: other
    image: {IMAGE}
    volumes: ["{outside}:/outside:ro"]
    command: cat /outside/data.txt
""",
    )
    out = cli("run", str(flow))
    assert out.returncode == 2
    assert f"allow it with RUNNER_ALLOWED_MOUNTS={outside} " in out.stderr
    _no_executions(cli)
    monkeypatch.setenv("RUNNER_ALLOWED_MOUNTS", str(tmp_path))
    execution_id = run_ok(cli, ["run", str(flow)])
    assert _logs(cli, execution_id, "own") == ["from the flow's folder"]
    assert _logs(cli, execution_id, "other") == ["from the host"]


def test_an_input_cannot_smuggle_in_a_host_path(cli: Cli, tmp_path: Path) -> None:
    flow = write_flow(
        tmp_path,
        f"""\
id: smuggle
inputs:
  - {{id: dir, type: string, default: cache}}
tasks:
  - id: mount
    image: {IMAGE}
    volumes: ["{{{{ inputs.dir }}}}:/host"]
    command: ls /host
""",
    )
    assert cli("validate", str(flow)).returncode == 0  # a template: checked once rendered
    out = cli("run", str(flow), "-i", "dir=/")
    assert out.returncode == 1, out.stderr
    run = _run(cli.show(execution_id_of(out.stdout)), "mount")
    assert run["state"] == "FAILED" and run["container_id"] is None
    assert run["error"].startswith(
        "volumes[0]: volume '/:/host': host path / holds the Docker socket /var/run/docker.sock"
    )
    assert "RUNNER_ALLOWED_MOUNTS" in run["error"]
    # An empty value is a task error too, not an internal one (it was a ValueError).
    out = cli("run", str(flow), "-i", "dir=")
    assert out.returncode == 1 and "Traceback" not in out.stderr
    run = _run(cli.show(execution_id_of(out.stdout)), "mount")
    assert run["error"].startswith("volumes[0]: volume ':/host' is not SOURCE:/TARGET[:ro|rw]")


def test_files_and_file_defaults_outside_the_folder_fail_validation(
    cli: Cli, tmp_path: Path
) -> None:
    (tmp_path / "flows").mkdir()
    flow = write_flow(
        tmp_path / "flows",
        f"""\
id: reach-out
inputs:
  - {{id: shadow, type: file, default: ../../../../../../etc/shadow}}
files: [../../../etc/hostname]
tasks: [{{id: a, image: {IMAGE}, command: "true"}}]
""",
    )
    out = cli("validate", str(flow))
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert lines[0].startswith(f"{flow}:3:") and "inputs[0] (shadow).default" in lines[0]
    assert lines[1].startswith(f"{flow}:4:") and "files[0]" in lines[1]
    assert all("outside the flow's folder" in line for line in lines)


# --- networks ------------------------------------------------------------------------------


def test_the_host_network_needs_the_setting(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    flow = write_flow(
        tmp_path,
        f"id: net\ntasks:\n  - {{id: look, image: {IMAGE}, network: host, command: 'ls /sys/class/net'}}\n",
    )
    out = cli("run", str(flow))
    assert out.returncode == 2
    assert out.stderr.strip().endswith(
        "tasks[0] (look).network: network 'host' shares the host's network (its ports and"
        " local services) with the task; allow it with RUNNER_ALLOW_HOST_NETWORK=1"
    )
    monkeypatch.setenv("RUNNER_ALLOW_HOST_NETWORK", "1")
    execution_id = run_ok(cli, ["run", str(flow)])
    assert "docker0" in _logs(cli, execution_id, "look")  # the engine's host's interfaces


# --- the runner's environment ----------------------------------------------------------------

ENV_FLOW = f"""\
id: reads-env
allowed_env: [RUNNER_TEST_POLICY_TOKEN, HOME]
tasks:
  - id: show
    image: {IMAGE}
    command: "echo token={{{{ env.RUNNER_TEST_POLICY_TOKEN }}}}"
"""


def test_allowed_env_only_declares_the_operator_allows(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RUNNER_TEST_POLICY_TOKEN", "tok-1")
    flow = write_flow(tmp_path, ENV_FLOW)
    assert cli("validate", str(flow)).returncode == 0  # needs are the run's business
    out = cli("run", str(flow))
    assert out.returncode == 2
    assert out.stderr.strip() == (
        f"error: {flow}:2: allowed_env: the flow reads RUNNER_TEST_POLICY_TOKEN, HOME from the"
        " runner's environment, which the operator has not allowed; allow with --env NAME"
        " (for this run) or RUNNER_ALLOWED_ENV=RUNNER_TEST_POLICY_TOKEN,HOME"
    )
    monkeypatch.setenv("RUNNER_ALLOWED_ENV", "*")  # a glob never matches RUNNER_* names
    out = cli("run", str(flow))
    assert out.returncode == 2 and "reads RUNNER_TEST_POLICY_TOKEN from" in out.stderr
    _no_executions(cli)
    execution_id = run_ok(cli, ["run", str(flow), "--env", "RUNNER_TEST_POLICY_TOKEN"])
    assert _logs(cli, execution_id, "show") == ["token=tok-1"]
    monkeypatch.setenv("RUNNER_ALLOWED_ENV", "HOME, RUNNER_TEST_POLICY_TOKEN")
    execution_id = run_ok(cli, ["run", str(flow)])
    assert _logs(cli, execution_id, "show") == ["token=tok-1"]


# --- secrets ---------------------------------------------------------------------------------

PASSWORD = "hunter2-Pw!"
TOKEN = "tok-9f8e7d6c5b"
FROM_FILE = 'file-s3cr3t "quoted"'
SECRETS = (PASSWORD, TOKEN, FROM_FILE)

SECRET_FLOW = f"""\
id: secrets
inputs:
  - {{id: db_password, type: secret}}
  - {{id: note, type: string, default: plain}}
tasks:
  - id: leak
    image: {IMAGE}
    env:
      PW: "{{{{ inputs.db_password }}}}"
      TOKEN: "{{{{ secret('API_TOKEN') }}}}"
      FROM_FILE: "{{{{ secret('FROM_FILE') }}}}"
    script: |
      echo "password=$PW token=$TOKEN file=$FROM_FILE"
      echo "on stderr: $PW" >&2
      printf '%s' "$PW" | sha256sum | cut -c1-64
      printf '::{{"outputs": {{"pw": "%s", "t": "x-%s-y", "n": 1}}}}::\\n' "$PW" "$TOKEN"
      printf '::{{"outputs": {{"quoted": "%s"}}}}::\\n' "$(printf '%s' "$FROM_FILE" | sed 's/"/\\\\"/g')"
  - id: fails
    depends_on: [leak]
    image: {IMAGE}
    command: "exit 3"
"""


def _assert_no_secret(text: str, where: str) -> None:
    for secret in SECRETS:
        assert secret not in text, f"{secret!r} in {where}:\n{text}"
    assert json.dumps(FROM_FILE)[1:-1] not in text, where


def test_secrets_never_show(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, docker_client: Any
) -> None:
    secrets_file = tmp_path / "secrets.env"
    secrets_file.write_text(f"FROM_FILE='{FROM_FILE}'\n")
    monkeypatch.setenv("RUNNER_SECRETS_FILE", str(secrets_file))
    monkeypatch.setenv("RUNNER_SECRET_API_TOKEN", TOKEN)
    flow = write_flow(tmp_path, SECRET_FLOW)
    out = cli("run", str(flow), "-i", f"db_password={PASSWORD}")
    assert out.returncode == 1, out.stderr  # `fails` fails, so a restart can be tried
    execution_id = execution_id_of(out.stdout)
    try:
        _assert_no_secret(out.stdout + out.stderr, "the run's console output")
        assert "leak         │ password=****** token=****** file=******" in out.stderr
        assert "leak         ! on stderr: ******" in out.stderr

        lines = _logs(cli, execution_id, "leak")
        # The container had the real value: only what was stored and printed is masked.
        assert hashlib.sha256(PASSWORD.encode()).hexdigest() in lines
        assert "password=****** token=****** file=******" in lines
        assert "on stderr: ******" in lines
        for args in (
            ("logs", execution_id),
            ("show", execution_id),
            ("show", execution_id, "--json"),
        ):
            shown = cli(*args)
            assert shown.returncode == 0, shown.stderr
            _assert_no_secret(shown.stdout + shown.stderr, " ".join(args))
        data = cli.show(execution_id)
        assert data["inputs"] == {"db_password": "******", "note": "plain"}
        assert _run(data, "leak")["outputs"] == {
            "pw": "******",
            "t": "x-******-y",
            "n": 1,
            "quoted": "******",
        }
        assert 'inputs     {"db_password": "******"' in cli("show", execution_id).stdout
        for stored in tmp_path.glob("runner.db*"):  # the database, its WAL and journal
            raw = stored.read_bytes()
            for secret in SECRETS:
                assert secret.encode() not in raw, (secret, stored)

        # The values of secret inputs are not stored, so a restart cannot reuse them.
        restarted = cli("restart", execution_id)
        assert restarted.returncode == 2
        assert restarted.stderr.strip() == (
            f"error: execution {execution_id} cannot be restarted: the values of its secret"
            " input(s) db_password are not stored; run the flow again with `runner run`"
        )
    finally:
        _remove_leftovers(docker_client, execution_id)


def test_secrets_never_show_in_the_json_log_echo(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, docker_client: Any
) -> None:
    monkeypatch.setenv("RUNNER_SECRET_API_TOKEN", TOKEN)
    flow = write_flow(
        tmp_path,
        f"""\
id: json-echo
tasks:
  - id: leak
    image: {IMAGE}
    env: {{TOKEN: "{{{{ secret('API_TOKEN') }}}}"}}
    command: 'echo "$TOKEN"; echo "$TOKEN" >&2; exit 4'
""",
    )
    out = cli("run", str(flow), "--log-format", "json")
    assert out.returncode == 1
    execution_id = execution_id_of(out.stdout)
    _remove_leftovers(docker_client, execution_id)
    assert TOKEN not in out.stdout + out.stderr
    echoed = [json.loads(line) for line in out.stderr.splitlines() if line.startswith("{")]
    assert [e["line"] for e in echoed if e.get("event") == "task_log"] == ["******", "******"]


def test_a_missing_secret_fails_the_task_naming_it(cli: Cli, tmp_path: Path) -> None:
    flow = write_flow(
        tmp_path,
        f"id: missing\ntasks:\n  - {{id: a, image: {IMAGE}, command: \"echo {{{{ secret('NOPE') }}}}\"}}\n",
    )
    out = cli("run", str(flow))
    assert out.returncode == 1
    error = _run(cli.show(execution_id_of(out.stdout)), "a")["error"]
    assert re.match(r"command: .*secret 'NOPE' is not set: set RUNNER_SECRET_NOPE", error), error


def test_an_unreadable_secrets_file_stops_the_run_before_it_starts(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RUNNER_SECRETS_FILE", str(tmp_path / "nope.env"))
    flow = write_flow(tmp_path, f"id: x\ntasks: [{{id: a, image: {IMAGE}, command: 'true'}}]\n")
    out = cli("run", str(flow))
    assert out.returncode == 2
    assert "RUNNER_SECRETS_FILE names" in out.stderr and "cannot be read" in out.stderr
    _no_executions(cli)


def test_the_secret_input_is_given_by_the_operator_only(cli: Cli, tmp_path: Path) -> None:
    flow = write_flow(tmp_path, SECRET_FLOW)
    out = cli("run", str(flow))
    assert out.returncode == 2
    assert "input 'db_password' is required" in out.stderr
    assert os.environ.get("RUNNER_SECRET_DB_PASSWORD") is None
