"""GitLab CI as it runs jobs with a `docker:dind` service over TLS, reproduced with real
engines: a dind engine that makes its own CA and client certificates in a `certs` volume
(DOCKER_TLS_CERTDIR=/certs), and a job container of the runner image on the same user
network, reaching it as `docker:2376` with the client files mounted at /certs/client.

The job runs the `variables` and `script` of docs/ci/gitlab-ci.yml's `flow` job as they
are. The task images of flows/polyglot_etl.yml are built on this machine's engine and
loaded into the dind engine's storage once (nothing can be pulled here), under the
content-hash tags the runner looks for, so the job's `build:` finds them.
"""

from __future__ import annotations

import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import BASE_IMAGE
from tests.integration.dind import (
    CERTS_DIR,
    DIND_TLS_PORT,
    TEST_LABEL,
    build_image,
    container_logs,
    copy_client_certs,
    load_image,
    published_port,
    remove_container,
    start_container,
    wait_for_engine,
)
from tests.integration.helpers import REPO
from tests.integration.runner_image import make_checkout

RECIPE = REPO / "docs" / "ci" / "gitlab-ci.yml"
CHECKOUT = "/builds/group/runner"  # where GitLab clones the project in the job container
JOB_TIMEOUT_S = 600
# certifi's bundle in the runner image: some CA bundle that is not the engine's
OTHER_CA_BUNDLE = "/opt/runner/lib/python3.11/site-packages/certifi/cacert.pem"
LABELS = {TEST_LABEL: "ci-gitlab"}


def recipe() -> tuple[dict[str, str], str]:
    """The `flow` job's variables and its script as one shell script."""
    job = yaml.safe_load(RECIPE.read_text())["flow"]
    variables = {name: str(value) for name, value in job["variables"].items()}
    return variables, "\n".join(job["script"])


@dataclass
class GitLab:
    """What the tests of this module share: a user network (the job's and the service's),
    the dind engine's storage with the images loaded, and the two images."""

    outer: Any
    network: str
    data_volume: str
    dind_image: str
    runner_image: str
    mode: str = ""  # how dind starts here: "privileged" or "fallback"

    def service(self, certs_volume: str, *, start: bool = True) -> Any:
        """A `docker:dind` service on the network as `docker`, on the shared storage."""
        name = f"runner-test-dind-{uuid.uuid4().hex[:12]}"
        container, self.mode = start_container(
            self.outer,
            name,
            self.data_volume,
            LABELS,
            image=self.dind_image,
            certs_volume=certs_volume,
            network=self.network,
            start=start,
            mode=self.mode or None,
        )
        return container

    def job(
        self,
        checkout: Path,
        script: str,
        env: dict[str, str],
        volumes: dict[str, dict[str, str]],
    ) -> Any:
        """A job container of the runner image, started, running `script` with sh -e in
        the checkout (GitLab runs its script with a shell, not the image's entrypoint)."""
        return self.outer.containers.run(
            self.runner_image,
            entrypoint=["sh", "-ec"],
            command=[script],
            environment=env,
            volumes={str(checkout): {"bind": CHECKOUT, "mode": "rw"}, **volumes},
            working_dir=CHECKOUT,
            network=self.network,
            labels=LABELS,
            detach=True,
        )


def finish(container: Any) -> tuple[int, str]:
    """Wait for a job, return its exit code and output, and remove it."""
    try:
        status = container.wait(timeout=JOB_TIMEOUT_S)
        output = container.logs().decode(errors="replace")
    finally:
        container.remove(force=True)
    return int(status["StatusCode"]), output


@pytest.fixture(scope="module")
def gitlab(
    docker_client: Any, runner_image: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GitLab]:
    from runner.backends.docker import DockerBackend
    from runner.execution import BuildImage

    outer = docker_client
    suffix = uuid.uuid4().hex[:12]
    network = outer.networks.create(f"runner-test-ci-{suffix}", driver="bridge", labels=LABELS)
    data = outer.volumes.create(f"runner-test-ci-{suffix}", labels=LABELS)
    setup = GitLab(outer, network.name, data.name, build_image(outer), runner_image)
    try:
        # Fill the dind engine's storage once: start it, load the images, stop it.
        certs = outer.volumes.create(f"runner-test-ci-{suffix}-certs0", labels=LABELS)
        service = setup.service(certs.name)
        try:
            tls = copy_client_certs(service, tmp_path_factory.mktemp("certs0"))
            url = f"tcp://127.0.0.1:{published_port(service, DIND_TLS_PORT)}"
            inner = wait_for_engine(url, service, tls=tls)
            tags = [
                DockerBackend(outer).ensure_image(BuildImage(REPO / "images" / name))
                for name in ("python", "node", "shell")
            ]
            for reference in (BASE_IMAGE, *tags):
                load_image(outer, inner, reference)
            inner.close()
        finally:
            remove_container(service)
            certs.remove(force=True)
        yield setup
    finally:
        for container in outer.containers.list(
            all=True, filters={"label": f"{TEST_LABEL}=ci-gitlab"}
        ):
            remove_container(container)
        network.remove()
        data.remove(force=True)


@pytest.fixture(scope="module")
def service(
    gitlab: GitLab, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Any, str, Path]]:
    """A running dind service with fresh certificates: (container, certs volume, a copy of
    its client files on this machine)."""
    certs = gitlab.outer.volumes.create(f"runner-test-ci-{uuid.uuid4().hex[:12]}", labels=LABELS)
    container = gitlab.service(certs.name)
    try:
        client_dir = tmp_path_factory.mktemp("client")
        tls = copy_client_certs(container, client_dir)
        url = f"tcp://127.0.0.1:{published_port(container, DIND_TLS_PORT)}"
        wait_for_engine(url, container, tls=tls).close()
        yield container, certs.name, client_dir
    finally:
        remove_container(container)
        certs.remove(force=True)


def test_the_polyglot_flow_runs_in_a_job_started_before_its_dind_service(
    gitlab: GitLab, tmp_path: Path
) -> None:
    """The certificate race of gitlab-runner#27384, made certain: the job starts while the
    service does not exist yet (its name does not resolve, no certificate is written);
    the service starts after, makes its CA, server and client certificates, then its
    daemon. The runner waits for all of that and the flow succeeds."""
    variables, script = recipe()
    checkout = make_checkout(tmp_path / "checkout")
    certs = gitlab.outer.volumes.create(f"runner-test-ci-{uuid.uuid4().hex[:12]}", labels=LABELS)
    service = gitlab.service(certs.name, start=False)
    job = None
    try:
        job = gitlab.job(
            checkout, script, variables, {certs.name: {"bind": CERTS_DIR, "mode": "ro"}}
        )
        time.sleep(2)  # the job is up and waiting before the service exists on the network
        service.start()
        started = time.monotonic()
        code, output = finish(job)
        job = None
        took = time.monotonic() - started
        print(f"job finished {took:.1f} s after the service started")
        assert code == 0, f"{output}\n--- dind:\n{container_logs(service)}"
    finally:
        if job is not None:
            job.remove(force=True)
        remove_container(service)
        certs.remove(force=True)
    waited = [line for line in output.splitlines() if "engine_waiting" in line]
    assert waited, output  # it did wait, and said so
    print(waited[0])
    assert "SUCCESS" in output
    assert "extract wrote 200 trips, zones.json sums to 200" in output
    [zones] = checkout.glob(".runner/artifacts/*/report/report/zones.json")
    assert zones.stat().st_size > 0


def test_the_engines_ca_wins_over_requests_ca_bundle_and_curl_ca_bundle(
    gitlab: GitLab, service: tuple[Any, str, Path], tmp_path: Path
) -> None:
    """A CI machine behind a TLS-inspecting proxy sets both to its proxy's CA bundle.
    The control: a plain docker-py client in the same job fails verification with them."""
    _, certs, _ = service
    variables, script = recipe()
    bundle = {"REQUESTS_CA_BUNDLE": OTHER_CA_BUNDLE, "CURL_CA_BUNDLE": OTHER_CA_BUNDLE}
    volumes = {certs: {"bind": CERTS_DIR, "mode": "ro"}}
    checkout = make_checkout(tmp_path / "checkout")

    control = gitlab.job(
        checkout,
        "python3 -c 'import docker; docker.from_env().ping()'",
        {**variables, **bundle},
        volumes,
    )
    code, output = finish(control)
    assert code != 0 and "CERTIFICATE_VERIFY_FAILED" in output, output

    code, output = finish(gitlab.job(checkout, script, {**variables, **bundle}, volumes))
    assert code == 0, output
    assert "extract wrote 200 trips" in output


def error_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("error:")]


def test_a_missing_key_is_one_line_naming_the_file_and_the_variable(
    gitlab: GitLab, service: tuple[Any, str, Path], tmp_path: Path
) -> None:
    _, _, client = service
    partial = tmp_path / "client"
    partial.mkdir()
    for name in ("ca.pem", "cert.pem"):
        (partial / name).write_bytes((client / name).read_bytes())
    variables, _ = recipe()
    env = {**variables, "DOCKER_CERT_PATH": "/partial", "RUNNER_ENGINE_WAIT_SECONDS": "2"}
    job = gitlab.job(
        make_checkout(tmp_path / "checkout"),
        "runner run flows/hello.yml",
        env,
        {str(partial): {"bind": "/partial", "mode": "ro"}},
    )
    started = time.monotonic()
    code, output = finish(job)
    assert code == 1, output
    assert "Traceback" not in output
    assert error_lines(output) == [
        "error: cannot reach the Docker engine at tcp://docker:2376: the TLS file key.pem is "
        "missing: no /partial/key.pem (DOCKER_CERT_PATH=/partial), still after waiting 2 s "
        "(RUNNER_ENGINE_WAIT_SECONDS). Set DOCKER_CERT_PATH to the folder with ca.pem, "
        "cert.pem and key.pem"
    ], output
    assert time.monotonic() - started < 60


def test_a_wrong_ca_is_one_line_naming_the_file_and_the_variable(
    gitlab: GitLab, service: tuple[Any, str, Path], tmp_path: Path
) -> None:
    _, _, client = service
    wrong = tmp_path / "client"
    wrong.mkdir()
    for name in ("cert.pem", "key.pem"):
        (wrong / name).write_bytes((client / name).read_bytes())
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-keyout", str(tmp_path / "other-ca-key.pem"), "-out", str(wrong / "ca.pem"),
         "-subj", "/CN=some other CA"],
        check=True,
        capture_output=True,
    )  # fmt: skip
    variables, _ = recipe()
    env = {**variables, "DOCKER_CERT_PATH": "/wrong", "RUNNER_ENGINE_WAIT_SECONDS": "30"}
    job = gitlab.job(
        make_checkout(tmp_path / "checkout"),
        "runner run flows/hello.yml",
        env,
        {str(wrong): {"bind": "/wrong", "mode": "ro"}},
    )
    started = time.monotonic()
    code, output = finish(job)
    assert code == 1, output
    assert "Traceback" not in output
    [line] = error_lines(output)
    assert line.startswith(
        "error: cannot reach the Docker engine at tcp://docker:2376: its certificate is not "
        "trusted by /wrong/ca.pem (DOCKER_CERT_PATH=/wrong)"
    ), line
    # no waiting: a wrong CA does not fix itself
    assert time.monotonic() - started < 25, output


def test_the_recipe_is_what_the_tests_run() -> None:
    """Guard against the recipe drifting from these tests' assumptions."""
    variables, script = recipe()
    assert variables["DOCKER_HOST"] == "tcp://docker:2376"
    assert variables["DOCKER_CERT_PATH"] == f"{CERTS_DIR}/client"
    assert variables["DOCKER_TLS_VERIFY"] == "1"
    assert script.startswith("runner run flows/polyglot_etl.yml")
