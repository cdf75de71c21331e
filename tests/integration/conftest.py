from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.helpers import Cli


@pytest.fixture(scope="session")
def runner_image(docker_client: object) -> str:
    """The image of the repository's Dockerfile, built once a session (its id)."""
    from tests.integration.runner_image import build_runner_image

    return build_runner_image(docker_client)


@pytest.fixture
def cli(tmp_path: Path, docker_client: object) -> Cli:
    return Cli(cwd=tmp_path, db_url=f"sqlite:///{tmp_path / 'runner.db'}")
