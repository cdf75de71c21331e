"""The compose deployment serves: `docker compose up -d` brings up Postgres and `runner
serve`, the API answers on 127.0.0.1 with a token made in the runner container, and a
flow of ./flows runs through it. Compose is `docker compose` (v2) when installed, else
`docker-compose` (v1.29), as in test_compose.py, whose project fixture this reuses."""

from __future__ import annotations

import time
from typing import Any

import httpx2
import pytest

from tests.conftest import missing_service
from tests.integration.test_compose import (  # noqa: F401  (fixtures)
    PYPI_UNREACHABLE,
    Compose,
    compose,
    free_port,
    postgres_image,
)

pytestmark = [pytest.mark.docker, pytest.mark.postgres]

READY_S = 180.0


def test_compose_up_serves_the_api_and_runs_a_flow(compose: Compose, docker_client: Any) -> None:
    build = compose("build", "runner", check=False, timeout=540)
    if build.returncode != 0:
        text = build.stdout + build.stderr
        if any(marker in text for marker in PYPI_UNREACHABLE):
            missing_service("cannot build the runner image: PyPI is not reachable")
        pytest.fail(f"compose build runner failed:\n{text[-3000:]}", pytrace=False)
    http_port = free_port()
    environment = compose.env()
    compose.env = lambda: {**environment, "RUNNER_HTTP_PORT": str(http_port)}  # type: ignore[method-assign]
    compose("up", "-d")
    base = f"http://127.0.0.1:{http_port}/api/v1"
    deadline = time.monotonic() + READY_S
    health: Any = None
    while time.monotonic() < deadline:
        try:
            health = httpx2.get(f"{base}/health", timeout=5)
            if health.status_code == 200:
                break
        except httpx2.HTTPError as exc:
            health = exc
        time.sleep(1)
    else:
        logs = compose("logs", "--tail", "40", "runner", check=False).stdout
        pytest.fail(f"the API never answered: {health}\n{logs}", pytrace=False)
    assert health.json() == {"status": "ok", "database": "ok", "engine": "ok"}
    assert httpx2.get(f"{base}/flows", timeout=10).status_code == 401

    made = compose("exec", "-T", "runner", "runner", "token", "create", "compose-test")
    token = made.stdout.strip()
    assert token.startswith("rnr_"), made.stdout + made.stderr
    with httpx2.Client(
        base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=60
    ) as client:
        flows = client.get("/flows").json()
        assert ("examples", "hello") in {(f["namespace"], f["id"]) for f in flows["flows"]}
        started = client.post("/executions/examples/hello", json={})
        assert started.status_code == 201, started.text
        execution_id = started.json()["id"]
        deadline = time.monotonic() + 120
        while (state := client.get(f"/executions/{execution_id}").json()["state"]) not in (
            "SUCCESS",
            "FAILED",
        ):
            assert time.monotonic() < deadline, state
            time.sleep(0.5)
        assert state == "SUCCESS"
        lines = client.get(f"/executions/{execution_id}/logs").json()["lines"]
        assert any("Hello from" in line["line"] for line in lines)
    # `stop` sends SIGTERM: the server drains and exits 0.
    compose("stop", "runner", timeout=120)
    container = compose("ps", "-a", "-q", "runner").stdout.strip()
    state = docker_client.containers.get(container).attrs["State"]
    assert state["ExitCode"] == 0, state
