"""A flow written on Windows: the flow file itself with CRLF endings runs; a `files:` script
with CRLF endings and a `#!` line is warned about by `runner validate`, and a task that
fails running it says why (in the container it is `$'\\r': command not found` or
`bad interpreter`)."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import BASE_IMAGE
from tests.integration.helpers import Cli, execution_id_of


def _flow(folder: Path) -> Path:
    (folder / "run.sh").write_bytes(b"#!/bin/sh\r\necho from the script\r\n")
    (folder / "run.sh").chmod(0o755)
    flow = folder / "flow.yml"
    text = (
        "id: from_windows\n"
        "files: [run.sh]\n"
        "tasks:\n"
        f"  - {{id: greet, image: {BASE_IMAGE}, command: 'echo the flow file is CRLF'}}\n"
        f"  - {{id: script, image: {BASE_IMAGE}, command: ./run.sh, depends_on: [greet]}}\n"
    )
    flow.write_bytes(text.replace("\n", "\r\n").encode())
    return flow


def test_validate_warns_about_a_crlf_script_and_still_says_ok(cli: Cli, tmp_path: Path) -> None:
    out = cli("validate", str(_flow(tmp_path)))
    assert out.returncode == 0, out.stderr
    assert "ok (2 tasks, 1 warning(s))" in out.stdout
    (warning,) = out.stderr.splitlines()
    assert warning.startswith(f"warning: {tmp_path / 'flow.yml'}:2:")
    assert "run.sh has Windows (CRLF) line endings" in warning


def test_a_crlf_flow_file_runs_and_a_crlf_script_failure_says_why(cli: Cli, tmp_path: Path) -> None:
    out = cli("run", str(_flow(tmp_path)))
    assert out.returncode == 1, out.stderr
    runs = {run["task_id"]: run for run in cli.show(execution_id_of(out.stdout))["task_runs"]}
    assert runs["greet"]["state"] == "SUCCESS"  # the CRLF flow file itself is fine
    error = runs["script"]["error"]
    assert runs["script"]["exit_code"] != 0
    assert "run.sh has Windows (CRLF) line endings and a '#!' line" in error
    assert "dos2unix" in error
