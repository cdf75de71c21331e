from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.helpers import Cli


@pytest.fixture
def cli(tmp_path: Path, docker_client: object) -> Cli:
    return Cli(cwd=tmp_path, db_url=f"sqlite:///{tmp_path / 'runner.db'}")
