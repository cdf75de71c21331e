"""The CLI's edges: numbers a command line may hold that no database takes (a usage
error, exit 2, never an internal error), and the log of a background `runner recover`
(task output: private to the user)."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from runner import api
from runner.api import _follow_in_background
from runner.backends.fake import FakeBackend, Script
from runner.cli import main
from runner.lease import Lease
from runner.loader import parse_flow


@pytest.fixture(autouse=True)
def _structlog_put_back() -> Iterator[None]:
    """Every command configures structlog to write to the stderr of the moment (here,
    capsys's, closed after the test): later tests must not log into it."""
    saved = structlog.get_config()
    yield
    structlog.configure(**saved)


def test_a_huge_limit_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["executions", "--db", f"sqlite:///{tmp_path / 'r.db'}", "--limit", "9" * 20])
    assert caught.value.code == 2
    err = capsys.readouterr().err
    assert "Invalid value for '--limit'" in err and "1<=x<=10000" in err
    assert "internal error" not in err and "Traceback" not in err


def test_logs_tail_prints_the_last_lines(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path / 'r.db'}"
    store = api.open_store(url, recover=False)
    try:
        lines = tuple(f"line {n}" for n in range(10))
        flow = parse_flow("id: f\ntasks:\n- {id: a, image: i}\n", path=tmp_path / "f.yml")
        backend = FakeBackend({"a": Script(lines=lines)})
        execution_id = api.run_flow(flow, store=store, backend=backend).execution_id
    finally:
        store.close()
    capsys.readouterr()  # what the run logged
    with pytest.raises(SystemExit) as caught:
        main(["logs", execution_id, "--db", url, "--tail", "2"])
    assert caught.value.code == 0
    printed = capsys.readouterr().out.splitlines()
    assert [line.split(maxsplit=2)[2] for line in printed] == ["line 8", "line 9"]
    with pytest.raises(SystemExit) as caught:
        main(["logs", execution_id, "--db", url, "--tail", "9" * 20])
    assert caught.value.code == 2
    err = capsys.readouterr().err
    assert "internal error" not in err and "Traceback" not in err


# The detached child outlives its Popen object, by design (it follows the execution).
@pytest.mark.filterwarnings("ignore::ResourceWarning")
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_the_background_recover_log_is_private(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """It was /tmp/runner-recover-ID.log, made with the umask: world-readable."""
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).resolve().parents[2]))
    lease = Lease("0" * 32, "RUNNING", "elsewhere", 1, "t", None)
    old = os.umask(0o022)
    try:
        said_lines: list[str] = []
        _follow_in_background(f"sqlite:///{tmp_path / 'r.db'}", said_lines.append)(lease)
    finally:
        os.umask(old)
    log = tmp_path / f"runner-{os.getuid()}" / f"runner-recover-{'0' * 32}.log"
    said = "\n".join(said_lines)
    assert f"log {log})" in said
    pid = int(said.split("background (pid ")[1].split(",")[0])
    os.waitpid(pid, 0)  # `runner recover` of an execution that does not exist: an error
    assert stat.S_IMODE(log.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(log.stat().st_mode) == 0o600
    assert b"error" in log.read_bytes()
