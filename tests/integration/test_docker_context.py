"""Docker contexts, as the Docker CLI leaves them on disk, followed by `runner run` with a
real engine behind them: DOCKER_HOST, then DOCKER_CONTEXT, then the current context of
config.json. HOME points at a temporary folder holding ~/.docker; which engine ran a flow
is read from the engines themselves (the kept workspace volume is on that one only)."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import BASE_IMAGE
from tests.integration.dind import DindEngine, dind_engine
from tests.integration.helpers import Cli, execution_id_of, labelled, write_flow

UNREACHABLE = "tcp://127.0.0.1:1"
DOCKER_VARIABLES = (
    "DOCKER_HOST",
    "DOCKER_CONTEXT",
    "DOCKER_CONFIG",
    "DOCKER_TLS_VERIFY",
    "DOCKER_CERT_PATH",
)


@pytest.fixture(scope="module")
def dind(docker_client: Any) -> Iterator[DindEngine]:
    with dind_engine(docker_client, images=[BASE_IMAGE]) as engine:
        yield engine


def write_context(home: Path, name: str, host: str) -> None:
    """What `docker context create NAME --docker host=HOST` writes."""
    folder = home / ".docker" / "contexts" / "meta" / hashlib.sha256(name.encode()).hexdigest()
    folder.mkdir(parents=True)
    meta = {
        "Name": name,
        "Metadata": {},
        "Endpoints": {"docker": {"Host": host, "SkipTLSVerify": False}},
    }
    (folder / "meta.json").write_text(json.dumps(meta))


def use_context(home: Path, name: str) -> None:
    """What `docker context use NAME` writes."""
    (home / ".docker" / "config.json").write_text(json.dumps({"currentContext": name}))


@pytest.fixture
def home(tmp_path: Path, dind: DindEngine, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A HOME with two contexts: `dind` (the test engine) and `broken` (nobody listens)."""
    folder = tmp_path / "home"
    write_context(folder, "dind", dind.url)
    write_context(folder, "broken", UNREACHABLE)
    monkeypatch.setenv("HOME", str(folder))
    monkeypatch.setenv("RUNNER_ENGINE_WAIT_SECONDS", "0")
    for name in DOCKER_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    return folder


def run_on_which_engine(cli: Cli, tmp_path: Path, dind: DindEngine, docker_client: Any) -> str:
    """Run a one-task flow keeping its workspace; say which engine holds the workspace."""
    flow = write_flow(
        tmp_path, f"id: ctx\ntasks:\n  - {{id: a, image: {BASE_IMAGE}, command: 'true'}}\n"
    )
    out = cli("run", str(flow), "--keep-workspace")
    assert out.returncode == 0, out.stdout + out.stderr
    execution_id = execution_id_of(out.stdout)
    _, on_dind = labelled(dind.client, execution_id)
    _, on_local = labelled(docker_client, execution_id)
    for volume in on_dind + on_local:
        volume.remove(force=True)
    assert len(on_dind) + len(on_local) == 1
    return "dind" if on_dind else "local"


def test_the_current_context_is_followed_when_docker_host_is_unset(
    cli: Cli, home: Path, tmp_path: Path, dind: DindEngine, docker_client: Any
) -> None:
    assert run_on_which_engine(cli, tmp_path, dind, docker_client) == "local"
    use_context(home, "dind")
    assert run_on_which_engine(cli, tmp_path, dind, docker_client) == "dind"


def test_docker_context_wins_over_the_current_context(
    cli: Cli, home: Path, tmp_path: Path, dind: DindEngine, docker_client: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    use_context(home, "broken")
    monkeypatch.setenv("DOCKER_CONTEXT", "dind")
    assert run_on_which_engine(cli, tmp_path, dind, docker_client) == "dind"
    monkeypatch.setenv("DOCKER_CONTEXT", "default")
    assert run_on_which_engine(cli, tmp_path, dind, docker_client) == "local"


def test_docker_host_wins_over_docker_context(
    cli: Cli, home: Path, tmp_path: Path, dind: DindEngine, docker_client: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    use_context(home, "broken")
    monkeypatch.setenv("DOCKER_CONTEXT", "broken")
    monkeypatch.setenv("DOCKER_HOST", dind.url)
    assert run_on_which_engine(cli, tmp_path, dind, docker_client) == "dind"


def test_a_context_that_does_not_exist_is_one_line(
    cli: Cli, home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOCKER_CONTEXT", "gone")
    flow = write_flow(
        tmp_path, f"id: ctx\ntasks:\n  - {{id: a, image: {BASE_IMAGE}, command: 'true'}}\n"
    )
    out = cli("run", str(flow))
    assert out.returncode == 1
    assert "Traceback" not in out.stderr
    meta = (
        home / ".docker" / "contexts" / "meta" / hashlib.sha256(b"gone").hexdigest() / "meta.json"
    )
    assert f"Docker context 'gone' (DOCKER_CONTEXT=gone) does not exist: no {meta}" in out.stderr, (
        out.stderr
    )
    assert os.environ.get("DOCKER_HOST") is None
