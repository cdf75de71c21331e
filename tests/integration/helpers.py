"""Helpers for the integration tests: run the CLI, find what an execution left behind."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]


@dataclass
class Cli:
    """Runs `python -m runner` as a user would, with its own database and folder."""

    cwd: Path
    db_url: str

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["RUNNER_DATABASE_URL"] = self.db_url
        env.pop("RUNNER_LOG_FORMAT", None)
        return env

    def __call__(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "runner", *args],
            cwd=self.cwd,
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def popen(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "runner", *args],
            cwd=self.cwd,
            env=self.env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def show(self, execution_id: str) -> dict[str, Any]:
        out = self("show", execution_id, "--json")
        assert out.returncode == 0, out.stderr
        data: dict[str, Any] = json.loads(out.stdout)
        return data


def execution_id_of(stdout: str) -> str:
    first = stdout.splitlines()[0]
    assert first.startswith("execution "), stdout
    return first.split()[1]


def write_flow(directory: Path, text: str, name: str = "flow.yml") -> Path:
    path = directory / name
    path.write_text(text)
    return path


def labelled(docker_client: Any, execution_id: str) -> tuple[list[Any], list[Any]]:
    """Containers and volumes that still carry the execution's label."""
    label = f"io.runner.execution={execution_id}"
    containers = docker_client.containers.list(all=True, filters={"label": label})
    volumes = docker_client.volumes.list(filters={"label": label})
    return containers, volumes


def run_ok(cli: Cli, args: Sequence[str]) -> str:
    out = cli(*args)
    assert out.returncode == 0, (
        f"exit {out.returncode}\nstdout:\n{out.stdout}\nstderr:\n{out.stderr}"
    )
    return execution_id_of(out.stdout)
