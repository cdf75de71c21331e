from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.helpers import Cli
from tests.integration.swarm import Swarm, swarm_cluster


@pytest.fixture(scope="session")
def runner_image(docker_client: object) -> str:
    """The image of the repository's Dockerfile, built once a session (its id)."""
    from tests.integration.runner_image import build_runner_image

    return build_runner_image(docker_client)


@pytest.fixture
def cli(tmp_path: Path, docker_client: object) -> Cli:
    return Cli(cwd=tmp_path, db_url=f"sqlite:///{tmp_path / 'runner.db'}")


@pytest.fixture(scope="session")
def swarm(docker_client: Any) -> Iterator[Swarm]:
    """The three-node test swarm of tests/integration/swarm.py, started the first time a
    test of the session asks for it (about 20 s) and removed at the end of the session.
    A test that stops a node starts it again before it ends."""
    with swarm_cluster(docker_client) as cluster:
        print(f"\n{cluster.summary()}")  # shown with -s: how it was started, how long it took
        yield cluster
