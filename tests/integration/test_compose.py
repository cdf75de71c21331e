"""The docker-compose deployment: the history in Postgres survives `down` and `up`.

Each test starts docker-compose.yml's `postgres` service under its own project name and
host port, records executions through the Store, takes the project down and up again,
and reads them back: once with the named volume `pgdata`, once with RUNNER_PGDATA
pointing at a host folder whose path has a space. `down -v` shows the difference: it
deletes the named volume (and the history with it) but leaves a host folder alone.

The Postgres image is `runner-test/postgres:15`, built from images/postgres (Debian's
PostgreSQL, no registry needed); set RUNNER_TEST_POSTGRES_IMAGE (e.g. postgres:16) to use
another one instead. Compose is `docker compose` (v2) when installed, else
`docker-compose` (v1.29).
"""

from __future__ import annotations

import functools
import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from runner.store import open_store
from tests.conftest import BASE_IMAGE, missing_service
from tests.integration.helpers import Cli, execution_id_of, run_ok

pytestmark = [pytest.mark.docker, pytest.mark.postgres]

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yml"
POSTGRES_IMAGE_DIR = REPO / "images" / "postgres"
TEST_POSTGRES_IMAGE = "runner-test/postgres:15"

DB, USER, PASSWORD = "runner_compose", "runner_compose", "compose-test-password"
HEALTHY_TIMEOUT_S = 120.0
# What pip prints in `docker build` when it cannot reach PyPI (no network, a TLS proxy).
PYPI_UNREACHABLE = (
    "CERTIFICATE_VERIFY_FAILED",
    "No matching distribution found",
    "Could not fetch URL",
)


@functools.cache
def compose_command() -> tuple[str, ...] | None:
    """`docker compose` (v2) when the plugin answers, else `docker-compose` (v1), else None."""
    docker = shutil.which("docker")
    if docker is not None:
        probe = subprocess.run(
            [docker, "compose", "version"], capture_output=True, text=True, timeout=60
        )
        if probe.returncode == 0:
            return (docker, "compose")
    legacy = shutil.which("docker-compose")
    return (legacy,) if legacy is not None else None


def free_port() -> int:
    """A TCP port nobody listens on right now on 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class Compose:
    """One compose project of docker-compose.yml, with its own name, port and settings.

    The settings are given in the environment, which takes precedence over a developer's
    `.env`, so the tests never touch their data.
    """

    command: tuple[str, ...]
    project: str
    image: str
    port: int
    pgdata: str = ""  # "" -> the named volume; a path -> that host folder
    bind_folders: list[Path] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://{USER}:{PASSWORD}@127.0.0.1:{self.port}/{DB}"

    def env(self) -> dict[str, str]:
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("COMPOSE_", "RUNNER_PG", "RUNNER_POSTGRES", "POSTGRES_"))
        }
        env.update(
            RUNNER_POSTGRES_IMAGE=self.image,
            RUNNER_POSTGRES_PORT=str(self.port),
            RUNNER_PGDATA=self.pgdata,
            POSTGRES_DB=DB,
            POSTGRES_USER=USER,
            POSTGRES_PASSWORD=PASSWORD,
            # The classic builder: BuildKit would look up the locally imported base image
            # in a registry.
            COMPOSE_DOCKER_CLI_BUILD="0",
        )
        env.setdefault("DOCKER_BUILDKIT", "0")
        return env

    def __call__(
        self, *args: str, check: bool = True, timeout: float = 300
    ) -> subprocess.CompletedProcess[str]:
        argv = [*self.command, "-f", str(COMPOSE_FILE), "-p", self.project, *args]
        out = subprocess.run(
            argv, cwd=REPO, env=self.env(), capture_output=True, text=True, timeout=timeout
        )
        if check and out.returncode != 0:
            pytest.fail(
                f"`{' '.join(argv)}` exited {out.returncode}\n"
                f"stdout:\n{out.stdout}\nstderr:\n{out.stderr}",
                pytrace=False,
            )
        return out

    def up_postgres(self, docker_client: Any) -> float:
        """`up -d postgres`, then wait for its health check; returns the seconds it took."""
        started = time.monotonic()
        self("up", "-d", "postgres")
        container_id = self("ps", "-q", "postgres").stdout.strip()
        assert container_id, f"no postgres container in project {self.project}"
        deadline = started + HEALTHY_TIMEOUT_S
        while True:
            container = docker_client.containers.get(container_id)
            health = container.attrs["State"].get("Health", {}).get("Status")
            if health == "healthy":
                return time.monotonic() - started
            if container.status == "exited" or health == "unhealthy" or time.monotonic() > deadline:
                logs = container.logs(tail=40).decode(errors="replace")
                pytest.fail(
                    f"postgres of project {self.project} is {container.status}/{health} "
                    f"after {time.monotonic() - started:.0f} s (limit {HEALTHY_TIMEOUT_S:.0f} s); "
                    f"its last log lines:\n{logs}",
                    pytrace=False,
                )
            time.sleep(0.5)

    def restart(self, docker_client: Any, *down_flags: str) -> float:
        """`down` (with `down_flags`, e.g. -v) and up again; returns the seconds to healthy."""
        self("down", *down_flags)
        return self.up_postgres(docker_client)

    def clean_up(self, docker_client: Any) -> None:
        """Remove everything the project made, and the bind folders' files.

        The files belong to the container's postgres user, so a container removes them:
        the tests may not run as root.
        """
        self("down", "-v", "--remove-orphans", check=False)
        for folder in self.bind_folders:
            if folder.exists():
                docker_client.containers.run(
                    BASE_IMAGE,
                    ["rm", "-rf", f"/parent/{folder.name}"],
                    volumes={str(folder.parent): {"bind": "/parent", "mode": "rw"}},
                    remove=True,
                )


@pytest.fixture(scope="session")
def postgres_image(docker_client: Any) -> str:
    """The image of the `postgres` service: built from images/postgres once a session
    (and cached by the engine), or RUNNER_TEST_POSTGRES_IMAGE as it is."""
    given = os.environ.get("RUNNER_TEST_POSTGRES_IMAGE")
    if given:
        return given
    from docker.errors import BuildError

    try:
        docker_client.images.build(path=str(POSTGRES_IMAGE_DIR), tag=TEST_POSTGRES_IMAGE, rm=True)
    except BuildError as exc:
        lines = "".join(str(chunk.get("stream", chunk.get("error", ""))) for chunk in exc.build_log)
        pytest.fail(f"cannot build {TEST_POSTGRES_IMAGE}: {exc}\n{lines[-3000:]}", pytrace=False)
    return TEST_POSTGRES_IMAGE


@pytest.fixture
def compose(docker_client: Any, postgres_image: str) -> Iterator[Compose]:
    command = compose_command()
    if command is None:
        missing_service("neither `docker compose` nor `docker-compose` is installed")
        raise AssertionError("unreachable")
    project = Compose(
        command=command,
        project=f"runnertest_{uuid.uuid4().hex[:10]}",
        image=postgres_image,
        port=free_port(),
    )
    try:
        yield project
    finally:
        project.clean_up(docker_client)


def record_execution(url: str, flow_id: str) -> str:
    """Create an execution through the Store (which also migrates the database)."""
    execution_id = uuid.uuid4().hex
    with open_store(url) as store:
        store.create_execution(
            execution_id=execution_id,
            flow_id=flow_id,
            namespace="tests",
            revision="r1",
            source=f"id: {flow_id}\ntasks: []\n",
            inputs={"rows": 100},
            labels={"suite": "compose"},
        )
    return execution_id


def recorded(url: str) -> dict[str, str]:
    """Execution id -> flow id of every execution in the database."""
    with open_store(url) as store:
        return {e.id: e.flow_id for e in store.list_executions(limit=1000).items}


def test_named_volume_keeps_the_history_across_down_and_up_but_not_down_v(
    compose: Compose, docker_client: Any
) -> None:
    first_up = compose.up_postgres(docker_client)
    kept = record_execution(compose.url, "named_volume")
    volume = f"{compose.project}_pgdata"
    assert docker_client.volumes.get(volume) is not None

    compose.restart(docker_client)
    assert recorded(compose.url) == {kept: "named_volume"}
    with open_store(compose.url) as store:
        execution = store.get_execution(kept)
    assert (execution.namespace, dict(execution.inputs)) == ("tests", {"rows": 100})

    # `down -v` deletes the named volume: a new, empty cluster comes up.
    again = compose.restart(docker_client, "-v")
    assert recorded(compose.url) == {}
    print(f"healthy after first up {first_up:.1f} s, after down -v + up {again:.1f} s")


def test_host_folder_with_a_space_keeps_the_history_even_across_down_v(
    compose: Compose, docker_client: Any, tmp_path: Path
) -> None:
    folder = tmp_path / "Data Engg" / "runner-pgdata"
    folder.parent.mkdir()
    compose.pgdata = str(folder)  # created by the engine, chowned by the image's entrypoint
    compose.bind_folders.append(folder)

    compose.up_postgres(docker_client)
    kept = record_execution(compose.url, "host_folder")
    assert (folder / "PG_VERSION").exists(), sorted(p.name for p in folder.parent.iterdir())

    compose.restart(docker_client)
    assert recorded(compose.url) == {kept: "host_folder"}

    # The folder is not a compose volume: `down -v` leaves it, and the history in it.
    compose.restart(docker_client, "-v")
    assert recorded(compose.url) == {kept: "host_folder"}


def test_a_flow_run_by_the_cli_is_kept_in_compose_postgres(
    compose: Compose, docker_client: Any, tmp_path: Path
) -> None:
    compose.up_postgres(docker_client)
    cli = Cli(cwd=tmp_path, db_url=compose.url)
    execution_id = run_ok(cli, ["run", str(REPO / "flows" / "hello.yml")])

    compose.restart(docker_client)
    shown = cli.show(execution_id)
    assert shown["state"] == "SUCCESS", shown
    logs = cli("logs", execution_id)
    assert logs.returncode == 0, logs.stderr
    assert "Hello from" in logs.stdout


def test_the_runner_service_waits_for_postgres_and_runs_a_flow(
    compose: Compose, docker_client: Any
) -> None:
    build = compose("build", "runner", check=False, timeout=540)
    if build.returncode != 0:
        text = build.stdout + build.stderr
        if any(marker in text for marker in PYPI_UNREACHABLE):
            missing_service(
                "cannot build the runner image: PyPI is not reachable from `docker build` "
                "(set RUNNER_PIP_INDEX_URL or RUNNER_PIP_TRUSTED_HOST, see .env.example)"
            )
        pytest.fail(f"compose build runner failed:\n{text[-3000:]}", pytrace=False)

    # No `up` first: `run` starts postgres and waits for it to be healthy (depends_on).
    out = compose("run", "--rm", "-T", "runner", "run", "hello.yml")
    execution_id = execution_id_of(out.stdout)
    with open_store(compose.url) as store:
        execution = store.get_execution(execution_id)
    assert (execution.flow_id, execution.state) == ("hello", "SUCCESS"), execution
