"""A real `runner serve` for the integration tests: a subprocess on a free port, its own
flows folder and database, a token, and an HTTP client (httpx2) that speaks to it."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2

from tests.integration.helpers import Cli

READY_TIMEOUT_S = 60.0
_LISTENING = re.compile(r"listening on (http://\S+)")


@dataclass
class Server:
    """One `runner serve` process and a client holding a token."""

    process: subprocess.Popen[str]
    url: str
    token: str
    output: list[str] = field(default_factory=list)  # stderr lines, for failure messages

    @property
    def client(self) -> httpx2.Client:
        return httpx2.Client(
            base_url=f"{self.url}/api/v1",
            headers={"Authorization": f"Bearer {self.token}"},
            timeout=60,
        )

    def get(self, path: str, **kwargs: Any) -> Any:
        with self.client as client:
            answer = client.get(path, **kwargs)
        assert answer.status_code == 200, (path, answer.status_code, answer.text)
        return answer.json()

    def post(self, path: str, **kwargs: Any) -> httpx2.Response:
        with self.client as client:
            return client.post(path, **kwargs)

    def wait_state(self, execution_id: str, *states: str, timeout: float = 120) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        found: dict[str, Any] = {}
        while time.monotonic() < deadline:
            found = self.get(f"/executions/{execution_id}")
            if found["state"] in states:
                return found
            time.sleep(0.1)
        raise AssertionError(f"{execution_id} never reached {states}: {found}\n{self.log()}")

    def log(self) -> str:
        return "\n".join(self.output[-60:])

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 120) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        return self.process.wait(timeout=timeout)


def make_token(cli: Cli) -> str:
    out = cli("token", "create", f"t{time.monotonic_ns()}")
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


@contextmanager
def running_server(
    cli: Cli, flows: Path, *extra: str, env: dict[str, str] | None = None
) -> Iterator[Server]:
    """`runner serve --port 0` on `flows`, ready (its health answered), killed after."""
    token = make_token(cli)
    process = subprocess.Popen(
        [sys.executable, "-m", "runner", "serve", "--port", "0", "--flows", str(flows), *extra],
        cwd=cli.cwd,
        env={**cli.env(), **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    output: list[str] = []
    found: list[str] = []
    ready = threading.Event()

    def read_stdout() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            match = _LISTENING.search(line)
            if match:
                found.append(match.group(1))
                ready.set()

    def read_stderr() -> None:
        assert process.stderr is not None
        for line in process.stderr:
            output.append(line.rstrip("\n"))

    readers = [threading.Thread(target=t, daemon=True) for t in (read_stdout, read_stderr)]
    for reader in readers:
        reader.start()
    try:
        if not ready.wait(READY_TIMEOUT_S):
            raise AssertionError("runner serve did not start:\n" + "\n".join(output[-40:]))
        server = Server(process, found[0], token, output)
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            try:
                with httpx2.Client(timeout=5) as probe:
                    if probe.get(f"{server.url}/api/v1/health").status_code == 200:
                        break
            except httpx2.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError("runner serve is not healthy:\n" + server.log())
            time.sleep(0.1)
        yield server
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=30)
        # The pipes end with the process: close them once read, or a later test gets
        # their ResourceWarning when they are collected (and warnings are errors).
        for reader in readers:
            reader.join(timeout=10)
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()


def sse_events(text: str) -> list[dict[str, str]]:
    events = []
    for block in text.replace("\r\n", "\n").strip().split("\n\n"):
        event: dict[str, str] = {}
        for line in block.splitlines():
            if line.startswith(":"):
                continue
            key, _, value = line.partition(": ")
            event[key] = value
        if event:
            events.append(event)
    return events


def environment_without(*names: str) -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in names}
