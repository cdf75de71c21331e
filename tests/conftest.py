"""Shared fixtures. Tests that need a service skip when it is missing, except in CI
(CI=true), where a missing Docker engine or Postgres must fail the run instead."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
BASE_IMAGE = os.environ.get("RUNNER_TEST_IMAGE", "debian:bookworm-slim")


def missing_service(message: str) -> None:
    """Skip locally, fail in CI: a green CI must mean the integration tests ran."""
    if IN_CI:
        pytest.fail(f"{message} (CI=true: required)", pytrace=False)
    pytest.skip(message)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/integration" in str(item.fspath).replace(os.sep, "/"):
            item.add_marker(pytest.mark.docker)
        # every test on the test swarm, whichever module: `-m swarm` / `-m "not swarm"`
        if "swarm" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.swarm)


@pytest.fixture(scope="session")
def docker_client() -> Iterator[object]:
    try:
        import docker

        client = docker.from_env()
        client.ping()
    except Exception as exc:
        missing_service(f"no Docker engine reachable: {exc}")
        raise
    try:
        client.images.get(BASE_IMAGE)
    except Exception:
        missing_service(f"base image {BASE_IMAGE} is not loaded (see .ci/run)")
    yield client
    client.close()


@pytest.fixture(scope="session")
def postgres_server_url() -> str:
    """The server named by RUNNER_TEST_POSTGRES_URL, checked to answer."""
    from runner.store.testing import POSTGRES_URL_ENV, postgres_problem

    url = os.environ.get(POSTGRES_URL_ENV, "").strip()
    if not url:
        missing_service(f"{POSTGRES_URL_ENV} is not set")
    problem = postgres_problem(url)
    if problem is not None:
        missing_service(problem)
    return url


@pytest.fixture
def postgres_database_url(postgres_server_url: str) -> Iterator[str]:
    """A fresh database of that server for one test, dropped after it."""
    from runner.store.testing import temporary_postgres_database

    with temporary_postgres_database(postgres_server_url) as url:
        yield url
