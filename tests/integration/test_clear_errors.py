"""What a user sees when Docker cannot do what a flow asks: one clear line that names the
thing and says what to do, never a traceback. Through the `runner` command, with a real
engine: an image that is not there and cannot be pulled, a `build:` folder without a
Dockerfile, a daemon socket the user may not use, a disk that is full.

The last one is also checked against the engine's own error texts, which a test cannot
make a real daemon produce cheaply for every operation (pull, build, create, copy)."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import sysconfig
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker.errors
import pytest
import requests

from runner.backends.docker import _disk_full_message, _event_error, _pull_error, _translate
from runner.errors import BackendError, ImageError
from tests.conftest import BASE_IMAGE
from tests.integration.helpers import Cli, write_flow

SOCKET = "/var/run/docker.sock"
NOBODY = 65534
TRACEBACK = "Traceback (most recent call last)"


def lines_with(text: str, *words: str) -> list[str]:
    return [line for line in text.splitlines() if all(word in line for word in words)]


@pytest.fixture
def forget_executions(docker_client: Any) -> Iterator[list[str]]:
    """Execution ids whose kept workspaces (a failed run keeps its own) are removed after."""
    ids: list[str] = []
    yield ids
    for execution_id in ids:
        label = f"io.runner.execution={execution_id}"
        for container in docker_client.containers.list(all=True, filters={"label": label}):
            container.remove(force=True, v=True)
        for volume in docker_client.volumes.list(filters={"label": label}):
            volume.remove(force=True)


def execution_of(stdout: str) -> str | None:
    first = stdout.splitlines()[0] if stdout else ""
    return first.split()[1] if first.startswith("execution ") else None


# --- an image that is not there ---------------------------------------------------------


def test_an_unknown_image_is_one_line_naming_it(
    cli: Cli, tmp_path: Path, forget_executions: list[str]
) -> None:
    image = f"runner-test/no-such-image:{uuid.uuid4().hex[:8]}"
    flow = write_flow(
        tmp_path, f"id: img\ntasks:\n  - {{id: a, image: '{image}', command: 'true'}}\n"
    )

    out = cli("run", str(flow))
    forget_executions.append(execution_of(out.stdout) or "")

    assert out.returncode == 1, out.stderr
    assert TRACEBACK not in out.stderr + out.stdout
    (line,) = lines_with(out.stderr, "cannot be pulled")
    assert f"image '{image}' is not on the Docker engine and cannot be pulled: " in line
    assert "Check the name and your registry login, or load it with 'docker load'." in line


# --- a build folder without a Dockerfile --------------------------------------------------


@pytest.mark.parametrize("where", ["tasks", "finally"])
def test_a_build_folder_without_a_dockerfile_is_one_line_naming_it(
    cli: Cli, tmp_path: Path, where: str
) -> None:
    (tmp_path / "context").mkdir()
    (tmp_path / "context" / "build.sh").write_text("echo no Dockerfile here\n")
    task = "{id: b, build: ./context, command: 'true'}"
    text = f"id: bld\ntasks:\n  - {task}\n"
    if where == "finally":
        text = f"id: bld\ntasks:\n  - {{id: a, image: {BASE_IMAGE}, command: 'true'}}\nfinally:\n  - {task}\n"
    flow = write_flow(tmp_path, text)

    for command in ("validate", "run"):
        out = cli(command, str(flow))
        assert out.returncode == 2, out.stderr  # caught before anything runs
        assert out.stdout == ""
        assert out.stderr.splitlines() == [
            f"{flow}:{3 if where == 'tasks' else 5}:13: {where}[0] (b).build: "
            f"build folder '{tmp_path / 'context'}' has no Dockerfile"
        ]


# --- a daemon socket the user may not use -------------------------------------------------


@pytest.fixture
def world_dir() -> Iterator[Path]:
    """A folder any user may write (tmp_path sits in a folder only its owner can enter)."""
    path = Path(tempfile.mkdtemp(prefix="runner-nobody-", dir="/tmp"))
    path.chmod(0o777)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def nobody_python(world: Path) -> list[str]:
    """A command that runs this Python, with runner importable, as user nobody.

    Used as it is when nobody can run it. Otherwise (a Python installed under /root, say)
    its installation is bind-mounted at a path nobody can reach, in a mount namespace of
    the command's own: nothing changes outside it."""
    drop = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
    probe = "import runner.cli, docker, sqlalchemy"
    direct = [*drop, sys.executable]
    if subprocess.run([*direct, "-c", probe], cwd=world, capture_output=True).returncode == 0:
        return [*direct, "-m", "runner"]
    prefix = Path(sys.prefix)
    if sys.prefix != sys.base_prefix or not Path(sys.executable).is_relative_to(prefix):
        pytest.skip("user nobody cannot run this Python (a virtualenv outside its reach)")
    mount = world / "python"
    mount.mkdir()
    mount.chmod(0o755)
    site = Path(sysconfig.get_paths()["purelib"]).relative_to(prefix)
    inside = mount / Path(sys.executable).relative_to(prefix)
    # a .pth file (the editable install of runner) is read only from a site dir: add it
    code = (
        f"import site, sys; site.addsitedir({str(mount / site)!r}); "
        "from runner.cli import main; main(sys.argv[1:])"
    )
    command = [
        "unshare",
        "--mount",
        "sh",
        "-c",
        'mount --bind "$1" "$2" && shift 2 && exec "$@"',
        "sh",
        str(prefix),
        str(mount),
        # Its own libpython, not one of the system's (the interpreter's rpath names the
        # prefix, which nobody cannot reach; a Debian libpython3.11 would be found instead).
        "env",
        f"LD_LIBRARY_PATH={mount / 'lib'}",
        *drop,
        str(inside),
        "-c",
        code,
    ]
    check = subprocess.run([*command, "--version"], cwd=world, capture_output=True, text=True)
    if check.returncode != 0:
        pytest.skip(f"cannot run this Python as user nobody: {check.stderr.strip()[-300:]}")
    return command


def test_a_socket_without_permission_is_one_line_about_the_docker_group(
    docker_client: Any, world_dir: Path
) -> None:
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv to run the command as user nobody")
    if not Path(SOCKET).is_socket():
        pytest.skip(f"no Docker socket at {SOCKET}")
    mode = Path(SOCKET).stat().st_mode
    if mode & stat.S_IWOTH:
        pytest.skip(f"{SOCKET} is writable by every user: nobody would be let in")
    command = nobody_python(world_dir)
    flow = write_flow(
        world_dir, f"id: denied\ntasks:\n  - {{id: a, image: {BASE_IMAGE}, command: 'true'}}\n"
    )
    flow.chmod(0o644)
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("DOCKER_", "RUNNER_"))
    }
    env["HOME"] = str(world_dir)

    out = subprocess.run(
        [*command, "run", str(flow), "--db", f"sqlite:///{world_dir / 'runner.db'}"],
        cwd=world_dir,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert out.returncode == 1, f"stdout:\n{out.stdout}\nstderr:\n{out.stderr}"
    assert TRACEBACK not in out.stderr + out.stdout
    assert out.stderr.splitlines() == [
        f"error: permission denied on the Docker engine socket unix://{SOCKET}. Add your "
        "user to the 'docker' group ('sudo usermod -aG docker $USER', then log in again) "
        "or run runner as a user who may use Docker."
    ]


# --- a full disk --------------------------------------------------------------------------


def test_a_full_disk_is_one_line_saying_what_frees_space(
    cli: Cli, tmp_path: Path, docker_client: Any, forget_executions: list[str]
) -> None:
    # The task's script is delivered to /.runner/script before it starts; a 1 MB tmpfs
    # volume mounted there fills up as a full disk does: the engine says ENOSPC.
    tiny = f"runner-test-tiny-{uuid.uuid4().hex[:12]}"
    docker_client.api.create_volume(
        tiny, driver_opts={"type": "tmpfs", "device": "tmpfs", "o": "size=1m"}
    )
    try:
        padding = "#" + "x" * 3_000_000
        flow = write_flow(
            tmp_path,
            f"id: full\ntasks:\n  - id: a\n    image: {BASE_IMAGE}\n"
            f"    volumes: ['{tiny}:/.runner']\n    script: |\n      {padding}\n      true\n",
        )
        out = cli("run", str(flow))
        forget_executions.append(execution_of(out.stdout) or "")
    finally:
        for container in docker_client.containers.list(all=True, filters={"volume": tiny}):
            container.remove(force=True)
        docker_client.volumes.get(tiny).remove(force=True)

    assert out.returncode == 1, out.stderr
    assert TRACEBACK not in out.stderr + out.stdout
    (line,) = lines_with(out.stderr, "disk is full")
    assert "the Docker daemon's disk is full" in line
    assert "Free space with 'runner gc'" in line and "'docker system prune'" in line
    assert (
        "The engine said: Error processing tar file(exit status 1): write /.runner/script: no space left on device"
        in line
    )


# The engine answers a refused request with {"message": ...}; docker-py makes it the
# APIError's explanation. These are the texts it sends on a full disk (moby's own wording).
ENOSPC_RESPONSES = {
    "copy files into container 'x'": (
        "Error processing tar file(exit status 1): write /.runner/script: no space left on device"
    ),
    "create container 'x'": (
        "mkdir /var/lib/docker/overlay2/3f1c6a0d2b-init: no space left on device"
    ),
    "create workspace volume 'runner-ws-1'": (
        "create runner-ws-1: mkdir /var/lib/docker/volumes/runner-ws-1: no space left on device"
    ),
    "start container 'x'": (
        "failed to create shim task: OCI runtime create failed: runc create failed: unable to "
        "start container process: error during container init: write /proc/self/attr/keycreate: "
        "no space left on device: unknown"
    ),
}


def api_error(status: int, message: str) -> docker.errors.APIError:
    """The APIError docker-py raises for an engine response `{"message": message}`."""
    response = requests.Response()
    response.status_code = status
    response.url = "http+docker://localhost/v1.41/containers/create"
    response._content = json.dumps({"message": message}).encode()
    response.headers["Content-Type"] = "application/json"
    try:
        response.raise_for_status()
    except requests.exceptions.HTTPError as exc:
        try:
            docker.errors.create_api_error_from_http_exception(exc)
        except docker.errors.APIError as api:
            return api
    raise AssertionError("not an error response")


@pytest.mark.parametrize(("action", "engine_text"), list(ENOSPC_RESPONSES.items()))
def test_the_engines_enospc_reads_as_a_full_disk(action: str, engine_text: str) -> None:
    error = _translate(api_error(500, engine_text), action, "unix:///var/run/docker.sock")

    assert type(error) is BackendError
    assert str(error) == (
        f"the Docker daemon's disk is full (while trying to {action}). Free space with "
        "'runner gc' (removes the containers and volumes of ended executions) or "
        "'docker system prune' (stopped containers, unused networks, dangling images, "
        f"build cache), then try again. The engine said: {engine_text}"
    )


def test_a_full_disk_while_pulling_or_building_is_not_an_image_problem() -> None:
    # a pull's last event, as the engine streams it
    event = {
        "errorDetail": {
            "message": "failed to register layer: Error processing tar file(exit status 1): "
            "write /usr/lib/x86_64-linux-gnu/libLLVM-15.so.1: no space left on device"
        },
        "error": "failed to register layer: Error processing tar file(exit status 1): "
        "write /usr/lib/x86_64-linux-gnu/libLLVM-15.so.1: no space left on device",
    }
    pulled = _pull_error("python:3.12", _event_error(event), missing=True)
    assert type(pulled) is BackendError and not isinstance(pulled, ImageError)
    assert str(pulled).startswith(
        "the Docker daemon's disk is full (while trying to pull image 'python:3.12'). "
        "Free space with 'runner gc'"
    )
    built = _disk_full_message(
        "failed to copy files: copy file range failed: no space left on device\n",
        "build image from '/src/images/python'",
    )
    assert "\n" not in built
    assert built.endswith(
        "The engine said: failed to copy files: copy file range failed: no space left on device"
    )


def test_other_refusals_keep_the_engines_words() -> None:
    error = _translate(
        api_error(500, "Conflict. The volume is in use"), "remove volume 'v'", "unix:///x"
    )
    assert str(error) == "cannot remove volume 'v': Conflict. The volume is in use"
    pulled = _pull_error(
        "runner-test/absent:1",
        "pull access denied for runner-test/absent, repository does not exist or may "
        "require 'docker login': denied: requested access to the resource is denied",
        missing=True,
    )
    assert type(pulled) is ImageError
    assert str(pulled) == (
        "image 'runner-test/absent:1' is not on the Docker engine and cannot be pulled: pull "
        "access denied for runner-test/absent, repository does not exist or may require "
        "'docker login': denied: requested access to the resource is denied. Check the name "
        "and your registry login, or load it with 'docker load'."
    )
