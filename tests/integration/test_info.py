"""`runner info`: which backend, engine and database the runner would use, and why."""

from __future__ import annotations

import json
from typing import Any

from tests.integration.helpers import Cli


def test_info_names_the_engine_and_the_database_revision(cli: Cli, docker_client: Any) -> None:
    assert cli("db", "upgrade").returncode == 0
    out = cli("info", "--json")
    assert out.returncode == 0, out.stderr
    found = json.loads(out.stdout)
    assert found["backend"] == "docker"
    assert found["engine"]["version"] == docker_client.version()["Version"]
    assert found["engine"]["os"].startswith(docker_client.info()["OperatingSystem"])
    assert found["engine"]["chosen_by"]
    assert found["schema"]["is_head"] is True and found["database"].endswith("runner.db")

    text = cli("info")
    assert text.returncode == 0 and "chosen because" in text.stdout
    assert f"revision {found['schema']['revision']} (head)" in text.stdout


def test_info_hides_the_database_password_and_says_what_is_down(cli: Cli) -> None:
    down = Cli(cwd=cli.cwd, db_url="postgresql+psycopg://runner:hunter2@127.0.0.1:1/x")
    out = down("info", "--json")
    assert out.returncode == 1
    found = json.loads(out.stdout)
    assert "hunter2" not in out.stdout and "hunter2" not in out.stderr
    assert found["schema"] is None and "127.0.0.1:1" in found["database_error"]
    assert found["engine"] is not None  # the engine is up: said so, not hidden by the database
