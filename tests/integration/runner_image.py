"""The runner image (the repository's Dockerfile) for the tests that run runner in a
container: built once a session as runner:local, and used by its image id, since another
checkout's tests on the same engine may retag runner:local meanwhile.

pip runs inside the build: RUNNER_PIP_INDEX_URL / RUNNER_PIP_TRUSTED_HOST (as for
docker-compose.yml; .ci/run sets the latter behind its TLS-inspecting proxy) become the
PIP_INDEX_URL / PIP_TRUSTED_HOST build args. Where PyPI cannot be reached the tests skip
(fail under CI=true)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import docker.errors

from tests.conftest import missing_service
from tests.integration.helpers import REPO

RUNNER_IMAGE = "runner:local"
PYPI_UNREACHABLE = (
    "CERTIFICATE_VERIFY_FAILED",
    "No matching distribution found",
    "Could not fetch URL",
)


def build_runner_image(docker_client: Any) -> str:
    """Build the Dockerfile at the repository's root; return the image id."""
    args = {
        name: value
        for name, value in (
            ("PIP_INDEX_URL", os.environ.get("RUNNER_PIP_INDEX_URL", "")),
            ("PIP_TRUSTED_HOST", os.environ.get("RUNNER_PIP_TRUSTED_HOST", "")),
        )
        if value
    }
    try:
        image, _ = docker_client.images.build(
            path=str(REPO), tag=RUNNER_IMAGE, buildargs=args, rm=True, forcerm=True, pull=False
        )
    except docker.errors.BuildError as exc:
        text = "".join(str(c.get("stream", c.get("error", ""))) for c in exc.build_log)
        if any(marker in text for marker in PYPI_UNREACHABLE):
            missing_service(
                "cannot build the runner image: PyPI is not reachable from `docker build` "
                "(set RUNNER_PIP_INDEX_URL or RUNNER_PIP_TRUSTED_HOST)"
            )
        raise AssertionError(f"cannot build {RUNNER_IMAGE}: {exc}\n{text[-3000:]}") from exc
    return str(image.id)


def make_checkout(folder: Path) -> Path:
    """A copy of what a CI job's checkout holds that the example flows need (flows/ and
    the task images' build contexts), writable, as a job's clone is."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("flows", "images"):
        shutil.copytree(
            REPO / name, folder / name, ignore=shutil.ignore_patterns(".runner", "__pycache__")
        )
    return folder
