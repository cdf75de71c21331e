"""DockerBackend against a real engine, with the base image only: nothing is pulled from
the internet (the pull test builds a local registry from Debian's docker-registry package,
and skips if Debian's mirror is out of reach). Every test labels what it creates with its
own id and removes it afterwards."""

from __future__ import annotations

import contextlib
import gc
import io
import os
import socket
import tarfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import docker
import docker.errors
import pytest
from docker.types import LogConfig

from runner.backends.base import Workspace
from runner.backends.docker import HELPER_IMAGE, DockerBackend, _PullProgress
from runner.errors import BackendError, ImageError
from runner.execution import (
    BuildImage,
    ContainerExit,
    ContainerSpec,
    FileToCopy,
    LogLine,
    Mount,
    PullImage,
)

BASE_IMAGE = os.environ.get("RUNNER_TEST_IMAGE", "debian:bookworm-slim")  # as in conftest
TEST_LABEL = "io.runner.test-id"
REGISTRY_IMAGE = "runner-test/registry:1"
REGISTRY_DOCKERFILE = f"""\
FROM {BASE_IMAGE}
RUN apt-get update && apt-get install -y --no-install-recommends docker-registry \\
 && rm -rf /var/lib/apt/lists/* \\
 && printf 'version: 0.1\\nstorage:\\n  filesystem:\\n    rootdirectory: /var/lib/docker-registry\\nhttp:\\n  addr: :5000\\n' \\
    > /etc/docker/registry/config.yml
EXPOSE 5000
CMD ["docker-registry", "serve", "/etc/docker/registry/config.yml"]
"""

MakeSpec = Callable[..., ContainerSpec]


@pytest.fixture
def labels(docker_client: Any) -> Iterator[dict[str, str]]:
    """Unique labels for one test; whatever carries them is removed afterwards."""
    test_labels = {TEST_LABEL: uuid.uuid4().hex}
    yield test_labels
    DockerBackend(docker_client).cleanup(test_labels)


@pytest.fixture
def backend(docker_client: Any) -> Iterator[DockerBackend]:
    backend = DockerBackend(docker_client)
    yield backend
    backend.close()


@pytest.fixture
def workspace(backend: DockerBackend, labels: dict[str, str]) -> Workspace:
    handle = backend.workspace(f"test{labels[TEST_LABEL][:12]}", labels)
    handle.create()
    return handle


@pytest.fixture
def make_spec(labels: dict[str, str], workspace: Workspace) -> MakeSpec:
    def make(command: tuple[str, ...] | None, **overrides: Any) -> ContainerSpec:
        values: dict[str, Any] = {
            "name": f"runner-test-{uuid.uuid4().hex[:16]}",
            "image": BASE_IMAGE,
            "command": command,
            "env": {},
            "labels": labels,
            "workspace": workspace.name,
        }
        values.update(overrides)
        return ContainerSpec(**values)

    return make


def run(backend: DockerBackend, spec: ContainerSpec) -> tuple[list[LogLine], ContainerExit]:
    container_id = backend.start(spec)
    try:
        lines = list(backend.logs(container_id))
        return lines, backend.wait(container_id)
    finally:
        backend.remove(container_id)


def sh(script: str) -> tuple[str, ...]:
    return ("sh", "-c", script)


# -- logs -------------------------------------------------------------------------------


def test_stdout_and_stderr_lines_come_back_in_order_with_their_stream(
    backend: DockerBackend, make_spec: MakeSpec
) -> None:
    # the engine reads stdout and stderr from two pipes, so only writes some time apart
    # have a defined order between the streams
    script = "echo o1; echo o2; sleep 0.2; echo e1 >&2; echo e2 >&2; sleep 0.2; echo o3"
    lines, ended = run(backend, make_spec(sh(script)))

    assert [(line.stream, line.line) for line in lines] == [
        ("stdout", "o1"),
        ("stdout", "o2"),
        ("stderr", "e1"),
        ("stderr", "e2"),
        ("stdout", "o3"),
    ]
    assert ended.exit_code == 0
    assert all(line.time.tzinfo is not None for line in lines)
    assert [line.time for line in lines] == sorted(line.time for line in lines)


def test_last_line_without_newline_is_yielded(backend: DockerBackend, make_spec: MakeSpec) -> None:
    lines, _ = run(backend, make_spec(sh("echo first; printf 'no newline'; printf 'err' >&2")))

    assert sorted((line.stream, line.line) for line in lines) == [
        ("stderr", "err"),
        ("stdout", "first"),
        ("stdout", "no newline"),
    ]


def test_last_lines_without_newline_survive_the_follow_race(
    backend: DockerBackend, make_spec: MakeSpec
) -> None:
    # engine 20.10 ends a follow without such a line in about one run in five
    for _ in range(8):
        lines, _ = run(backend, make_spec(sh("echo a; printf b; printf c >&2")))
        assert sorted((line.stream, line.line) for line in lines) == [
            ("stderr", "c"),
            ("stdout", "a"),
            ("stdout", "b"),
        ]


def test_a_line_of_100_kib_comes_back_whole(backend: DockerBackend, make_spec: MakeSpec) -> None:
    # the engine splits lines longer than 16 KiB into several frames
    script = "echo before; head -c 102400 /dev/zero | tr '\\0' x; echo; echo after"
    lines, _ = run(backend, make_spec(sh(script)))

    assert [line.line for line in lines] == ["before", "x" * 102400, "after"]


def test_multibyte_utf8_comes_back_intact(backend: DockerBackend, make_spec: MakeSpec) -> None:
    lines, _ = run(backend, make_spec(sh("echo 'héllo wörld ✓ 日本 🚀'; echo 'ünïcödé' >&2")))

    assert sorted(line.line for line in lines) == ["héllo wörld ✓ 日本 🚀", "ünïcödé"]


def test_a_character_split_across_frames_survives(
    backend: DockerBackend, docker_client: Any, labels: dict[str, str]
) -> None:
    # One byte, then 2-byte characters: the 16 KiB frame boundaries fall inside one. The
    # default json-file driver has replaced both halves with U+FFFD before runner sees them;
    # the `local` driver keeps the bytes (and loses the long line's '\n': see _log_lines).
    script = "printf 'a'; for i in $(seq 20000); do printf 'é'; done; echo; echo after"
    api = docker_client.api
    host_config = api.create_host_config(log_config=LogConfig(type="local"), init=True)
    container = api.create_container(BASE_IMAGE, sh(script), labels=labels, host_config=host_config)
    api.start(container["Id"])

    lines = [line.line for line in backend.logs(container["Id"])]

    assert lines == ["a" + "é" * 20000, "after"]


def test_crlf_line_endings_are_stripped(backend: DockerBackend, make_spec: MakeSpec) -> None:
    lines, _ = run(backend, make_spec(sh("printf 'one\\r\\ntwo\\r\\nlast\\r'")))

    assert [line.line for line in lines] == ["one", "two", "last"]


def test_100000_lines_all_arrive_in_order(backend: DockerBackend, make_spec: MakeSpec) -> None:
    # How fast is bench/overhead.py's business (the `logs` rows), not a timed test's.
    lines, ended = run(backend, make_spec(("seq", "1", "100000")))

    assert ended.exit_code == 0
    assert [line.line for line in lines] == [str(n) for n in range(1, 100_001)]


def test_log_reading_keeps_up_with_the_sdk(
    backend: DockerBackend, make_spec: MakeSpec, docker_client: Any
) -> None:
    # 10 MB of 100-byte lines, read once the container has ended, against docker-py's own
    # stream of raw chunks (which parses neither streams, times, lines nor text)
    script = "yes \"$(printf '%099d' 0)\" | head -n 100000"
    container_id = backend.start(make_spec(sh(script)))
    try:
        backend.wait(container_id)
        started = time.perf_counter()
        ours = sum(len(line.line) + 1 for line in backend.logs(container_id))
        ours_s = time.perf_counter() - started
        started = time.perf_counter()
        chunks = docker_client.api.logs(container_id, stream=True, follow=True)
        sdk = sum(len(chunk) for chunk in chunks)
        sdk_s = time.perf_counter() - started
    finally:
        backend.remove(container_id)

    print(f"10 MB of logs: runner {ours_s:.2f} s, docker-py {sdk_s:.2f} s")
    assert ours == sdk == 10_000_000
    assert ours_s < 2 * sdk_s


def test_logs_stream_while_the_container_runs(backend: DockerBackend, make_spec: MakeSpec) -> None:
    container_id = backend.start(make_spec(sh("echo early; sleep 3; echo late")))
    try:
        started = time.perf_counter()
        lines = backend.logs(container_id)
        first = next(lines)
        first_after = time.perf_counter() - started
        rest = list(lines)
    finally:
        backend.remove(container_id)

    assert first.line == "early"
    assert first_after < 2.5, f"the first line took {first_after:.2f} s"
    assert [line.line for line in rest] == ["late"]


# -- running ----------------------------------------------------------------------------


@pytest.mark.parametrize("code", [0, 3])
def test_exit_code_is_reported(backend: DockerBackend, make_spec: MakeSpec, code: int) -> None:
    _, ended = run(backend, make_spec(sh(f"exit {code}")))

    assert ended == ContainerExit(exit_code=code)


def test_a_missing_executable_exits_127_with_the_init_message(
    backend: DockerBackend, make_spec: MakeSpec
) -> None:
    # the engine's init (tini) is PID 1, so the exec failure happens inside the container
    lines, ended = run(backend, make_spec(("no-such-program",)))

    assert ended.exit_code == 127
    assert "no-such-program" in lines[-1].line
    assert lines[-1].stream == "stderr"


def test_a_failed_start_raises_and_leaves_no_container(
    backend: DockerBackend, make_spec: MakeSpec, docker_client: Any, labels: dict[str, str]
) -> None:
    with pytest.raises(BackendError, match=r"cannot start container .*unable to find user nosuch"):
        backend.start(make_spec(("true",), user="nosuch"))

    label = f"{TEST_LABEL}={labels[TEST_LABEL]}"
    assert docker_client.api.containers(all=True, filters={"label": label}) == []


def test_files_are_copied_in_before_start_without_a_bind_mount(
    backend: DockerBackend, make_spec: MakeSpec
) -> None:
    script = b"#!/bin/sh\necho \"script says $(cat /tmp/data.txt)\"\nstat -c '%a %n' /tmp /tmp/data.txt\n"
    files = (
        FileToCopy("/opt/runner-task/run.sh", script),
        FileToCopy("/tmp/data.txt", b"hello", mode=0o600),
    )
    lines, ended = run(backend, make_spec(("/opt/runner-task/run.sh",), files=files))

    assert ended.exit_code == 0
    # an existing folder keeps its mode: /tmp is still world-writable and sticky
    assert [line.line for line in lines] == ["script says hello", "1777 /tmp", "600 /tmp/data.txt"]


def test_env_labels_and_working_dir_are_set(
    backend: DockerBackend, make_spec: MakeSpec, docker_client: Any, labels: dict[str, str]
) -> None:
    spec = make_spec(
        sh('echo "$GREETING $TARGET"; pwd'),
        env={"GREETING": "hello", "TARGET": "world with spaces"},
        labels={**labels, "io.runner.task": "extract"},
    )
    container_id = backend.start(spec)
    try:
        lines = [line.line for line in backend.logs(container_id)]
        container_labels = docker_client.api.inspect_container(container_id)["Config"]["Labels"]
    finally:
        backend.remove(container_id)

    assert lines == ["hello world with spaces", "/workspace"]
    assert container_labels == {**labels, "io.runner.task": "extract"}


def test_a_non_root_user_can_write_the_shared_workspace(
    backend: DockerBackend, make_spec: MakeSpec
) -> None:
    write = sh("id -u; echo produced > /workspace/out.txt; stat -c '%u %a' /workspace/in.txt")
    files = (FileToCopy("/workspace/in.txt", b"input", mode=0o644),)
    lines, ended = run(backend, make_spec(write, user="1000:1000", files=files))
    assert ended.exit_code == 0, lines
    assert [line.line for line in lines] == ["1000", "1000 644"]

    read = sh("cat /workspace/out.txt; stat -c '%a' /workspace")
    lines, ended = run(backend, make_spec(read, user="2000"))
    assert ended.exit_code == 0, lines
    assert [line.line for line in lines] == ["produced", "1777"]


def test_bind_and_named_volume_mounts(
    backend: DockerBackend,
    make_spec: MakeSpec,
    docker_client: Any,
    labels: dict[str, str],
    tmp_path: Path,
) -> None:
    (tmp_path / "in.txt").write_text("from the host\n")
    volume = f"runner-test-vol-{labels[TEST_LABEL][:12]}"
    docker_client.api.create_volume(volume, labels=labels)
    mounts = (
        Mount("bind", str(tmp_path), "/data", read_only=True),
        Mount("volume", volume, "/cache"),
    )
    script = "cat /data/in.txt; touch /data/x 2>/dev/null || echo read-only; echo kept > /cache/f"
    lines, ended = run(backend, make_spec(sh(script), mounts=mounts))
    assert ended.exit_code == 0, lines
    assert [line.line for line in lines] == ["from the host", "read-only"]

    lines, _ = run(backend, make_spec(("cat", "/cache/f"), mounts=mounts[1:]))
    assert [line.line for line in lines] == ["kept"]


def test_network_none_leaves_only_loopback(backend: DockerBackend, make_spec: MakeSpec) -> None:
    lines, _ = run(backend, make_spec(("ls", "/sys/class/net"), network="none"))
    assert [line.line for line in lines] == ["lo"]

    with pytest.raises(BackendError, match="runner-test-no-such-network"):
        backend.start(make_spec(("true",), network="runner-test-no-such-network"))


def _names(chunks: Iterator[bytes] | None) -> list[str]:
    assert chunks is not None
    with tarfile.open(fileobj=io.BytesIO(b"".join(chunks))) as archive:
        return sorted(archive.getnames())


def test_workspace_read_streams_a_tar_after_the_task_is_gone(
    backend: DockerBackend,
    make_spec: MakeSpec,
    workspace: Workspace,
    docker_client: Any,
    labels: dict[str, str],
) -> None:
    script = "mkdir -p /workspace/out && echo a > /workspace/out/a.txt && echo r > /workspace/r"
    container_id = backend.start(make_spec(sh(script)))
    assert backend.wait(container_id).exit_code == 0
    backend.remove(container_id)  # as a finished pod or swarm task: nothing left to read from

    chunks = workspace.read("out")
    assert chunks is not None
    with tarfile.open(fileobj=io.BytesIO(b"".join(chunks))) as archive:
        member = archive.extractfile("out/a.txt")
        assert member is not None and member.read() == b"a\n"
    assert _names(workspace.read("out/a.txt")) == ["a.txt"]
    assert _names(workspace.read("")) == [
        "workspace",
        "workspace/out",
        "workspace/out/a.txt",
        "workspace/r",
    ]
    assert workspace.read("absent") is None
    # Every helper container is gone, also after a reader that stopped half way.
    stream = workspace.read("out")
    assert stream is not None
    next(stream)
    stream.close()  # type: ignore[attr-defined]  # a generator
    label = f"{TEST_LABEL}={labels[TEST_LABEL]}"
    assert docker_client.api.containers(all=True, filters={"label": label}) == []

    workspace.remove()
    with pytest.raises(BackendError, match="does not exist"):
        workspace.read("out")
    assert not workspace.exists()  # reading did not create it again


def test_kill_ends_a_sleeping_container_promptly(
    backend: DockerBackend, make_spec: MakeSpec
) -> None:
    container_id = backend.start(make_spec(("sleep", "300")))
    started = time.perf_counter()
    backend.kill(container_id)
    ended = backend.wait(container_id)
    elapsed = time.perf_counter() - started

    assert ended.exit_code == 137
    assert not ended.oom_killed
    assert elapsed < 60  # it would sleep for 300 s
    backend.kill(container_id)  # already ended: not an error
    backend.remove(container_id)
    backend.remove(container_id)  # already gone: not an error
    backend.kill(container_id)


def test_an_oom_killed_container_is_reported(
    backend: DockerBackend, docker_client: Any, labels: dict[str, str]
) -> None:
    # ContainerSpec has no memory limit yet, so the container is made here directly
    api = docker_client.api
    host_config = api.create_host_config(mem_limit="16m", memswap_limit="16m", init=True)
    container = api.create_container(
        BASE_IMAGE, sh("x=a; while true; do x=$x$x; done"), labels=labels, host_config=host_config
    )
    api.start(container["Id"])

    ended = backend.wait(container["Id"])

    assert ended.exit_code == 137
    assert ended.oom_killed
    assert ended.started_at is not None and ended.finished_at is not None
    assert ended.started_at <= ended.finished_at


def test_wait_for_a_missing_container_raises(backend: DockerBackend) -> None:
    with pytest.raises(BackendError, match="no longer exists"):
        backend.wait("runner-test-no-such-container")


def test_a_full_disk_is_named_with_advice(
    backend: DockerBackend, make_spec: MakeSpec, docker_client: Any, labels: dict[str, str]
) -> None:
    # a 1 MB tmpfs volume stands in for a full disk
    tiny = f"runner-test-tiny-{labels[TEST_LABEL][:12]}"
    docker_client.api.create_volume(
        tiny, driver_opts={"type": "tmpfs", "device": "tmpfs", "o": "size=1m"}, labels=labels
    )
    big = (FileToCopy("/workspace/big", b"x" * 3_000_000),)

    with pytest.raises(BackendError, match=r"disk is full.*docker system prune"):
        backend.start(make_spec(("true",), workspace=tiny, files=big))


# -- images -----------------------------------------------------------------------------


@pytest.fixture
def built_images(docker_client: Any) -> Iterator[list[str]]:
    """Tags of images a test built; removed afterwards."""
    tags: list[str] = []
    yield tags
    for tag in tags:
        with contextlib.suppress(docker.errors.NotFound):
            docker_client.api.remove_image(tag, force=True)


def test_build_once_reuse_unchanged_rebuild_changed(
    docker_client: Any,
    make_spec: MakeSpec,
    built_images: list[str],
    tmp_path: Path,
) -> None:
    context = tmp_path / "My Context"
    context.mkdir()
    (context / "Dockerfile").write_text(f"FROM {BASE_IMAGE}\nCOPY msg.txt /msg.txt\n")
    (context / "msg.txt").write_text(uuid.uuid4().hex)
    (context / ".dockerignore").write_text("# not sent\nnotes/\n")
    (context / "notes").mkdir()
    (context / "notes" / "todo.txt").write_text("ignored")

    output: list[str] = []
    started = time.perf_counter()
    tag = DockerBackend(docker_client).ensure_image(BuildImage(context), output.append)
    first_s = time.perf_counter() - started
    built_images.append(tag)
    assert tag.startswith("runner-build/my-context:")
    assert any("COPY msg.txt" in line for line in output)

    # a new run (backend) with unchanged content: no build
    (context / "notes" / "todo.txt").write_text("changed, but ignored")
    output.clear()
    started = time.perf_counter()
    again = DockerBackend(docker_client).ensure_image(BuildImage(context), output.append)
    second_s = time.perf_counter() - started
    assert again == tag
    assert output == []

    (context / "msg.txt").write_text("changed")
    changed = DockerBackend(docker_client).ensure_image(BuildImage(context), output.append)
    built_images.append(changed)
    assert changed != tag
    assert any("COPY msg.txt" in line for line in output)
    print(f"build: first {first_s:.2f} s, unchanged {second_s * 1000:.1f} ms")

    lines, _ = run(DockerBackend(docker_client), make_spec(("cat", "/msg.txt"), image=changed))
    assert [line.line for line in lines] == ["changed"]


def test_concurrent_callers_build_once(
    docker_client: Any, built_images: list[str], tmp_path: Path
) -> None:
    (tmp_path / "Dockerfile").write_text(f"FROM {BASE_IMAGE}\nRUN echo {uuid.uuid4().hex}\n")
    backend = DockerBackend(docker_client)
    barrier = threading.Barrier(4)
    output: list[str] = []
    results: list[str] = []

    def prepare() -> None:
        barrier.wait()
        results.append(backend.ensure_image(BuildImage(tmp_path), output.append))

    threads = [threading.Thread(target=prepare) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    built_images.extend(set(results))

    assert len(results) == 4
    assert len(set(results)) == 1
    assert sum(line.startswith("Step 1/") for line in output) == 1


def test_a_failed_build_quotes_the_end_of_its_output(
    backend: DockerBackend, built_images: list[str], tmp_path: Path
) -> None:
    (tmp_path / "Dockerfile").write_text(
        f"FROM {BASE_IMAGE}\nRUN echo marker-{uuid.uuid4().hex[:8]} && exit 7\n"
    )

    with pytest.raises(ImageError) as caught:
        backend.ensure_image(BuildImage(tmp_path))

    message = str(caught.value)
    assert "returned a non-zero code: 7" in message
    assert "marker-" in message.split("last lines of the build:")[1]


def test_a_build_context_must_exist_and_hold_a_dockerfile(
    backend: DockerBackend, tmp_path: Path
) -> None:
    with pytest.raises(ImageError, match="does not exist"):
        backend.ensure_image(BuildImage(tmp_path / "missing"))
    with pytest.raises(ImageError, match="has no Dockerfile"):
        backend.ensure_image(BuildImage(tmp_path))


def test_pull_policy_never_requires_a_local_image(backend: DockerBackend) -> None:
    reference = f"runner-test/absent:{uuid.uuid4().hex[:8]}"
    with pytest.raises(ImageError, match=f"image '{reference}' is not on the Docker engine"):
        backend.ensure_image(PullImage(reference, policy="never"))


def test_pull_policy_never_and_missing_use_a_local_image(
    backend: DockerBackend, docker_client: Any
) -> None:
    image_id = docker_client.api.inspect_image(BASE_IMAGE)["Id"]
    progress: list[str] = []

    assert backend.ensure_image(PullImage(BASE_IMAGE, policy="never"), progress.append) == image_id
    assert backend.ensure_image(PullImage(BASE_IMAGE), progress.append) == image_id
    assert progress == []


def test_pulling_a_missing_image_fails_fast_with_advice(backend: DockerBackend) -> None:
    reference = f"runner-test/does-not-exist:{uuid.uuid4().hex[:8]}"
    started = time.perf_counter()
    with pytest.raises(ImageError) as caught:
        backend.ensure_image(PullImage(reference, policy="always"))
    elapsed = time.perf_counter() - started

    print(f"failed pull of {reference}: {elapsed:.2f} s: {caught.value}")
    assert str(caught.value).startswith(f"cannot pull image '{reference}': ")
    assert "Check the name and your registry login" in str(caught.value)
    assert elapsed < 30


def test_an_unknown_pull_policy_is_refused(backend: DockerBackend) -> None:
    with pytest.raises(ImageError, match="unknown pull policy 'sometimes'"):
        backend.ensure_image(PullImage(BASE_IMAGE, policy="sometimes"))


@pytest.fixture
def registry(docker_client: Any, labels: dict[str, str], tmp_path: Path) -> Iterator[Any]:
    """A registry on localhost (which the engine trusts over plain HTTP), built from
    Debian's docker-registry package: the one way to test pulls with no internet. Its image
    is kept between runs as a cache."""
    try:
        docker_client.images.get(REGISTRY_IMAGE)
    except docker.errors.ImageNotFound:
        (tmp_path / "Dockerfile").write_text(REGISTRY_DOCKERFILE)
        try:
            docker_client.images.build(
                path=str(tmp_path), tag=REGISTRY_IMAGE, rm=True, forcerm=True
            )
        except (docker.errors.BuildError, docker.errors.APIError) as exc:
            pytest.skip(f"cannot build a registry image (no Debian mirror?): {exc}")
    container = docker_client.containers.run(
        REGISTRY_IMAGE, detach=True, labels=labels, ports={"5000/tcp": ("127.0.0.1", None)}
    )
    container.reload()
    port = container.ports["5000/tcp"][0]["HostPort"]
    deadline = time.monotonic() + 20
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=1).close()
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    container.host = f"localhost:{port}"
    yield container


def test_pull_policies_against_a_local_registry(
    docker_client: Any, registry: Any, built_images: list[str], tmp_path: Path
) -> None:
    # an image with a layer the engine does not have, pushed and then deleted locally
    reference = f"{registry.host}/runner-test/pulled:{uuid.uuid4().hex[:8]}"
    (tmp_path / "Dockerfile").write_text(
        f"FROM {BASE_IMAGE}\nRUN head -c 4000000 /dev/urandom > /blob\n"
    )
    docker_client.images.build(path=str(tmp_path), tag=reference, rm=True, forcerm=True)
    built_images.append(reference)
    for event in docker_client.api.push(reference, stream=True, decode=True):
        assert "error" not in event, event
    docker_client.api.remove_image(reference)

    progress: list[str] = []
    backend = DockerBackend(docker_client)
    started = time.perf_counter()
    image_id = backend.ensure_image(PullImage(reference), progress.append)
    print(f"pulled {reference} in {time.perf_counter() - started:.2f} s: {progress}")
    assert image_id == docker_client.api.inspect_image(reference)["Id"]
    assert progress[0] == f"pulling {reference}"
    assert progress[-1] == f"pulling {reference}: Downloaded newer image for {reference}"

    progress.clear()
    assert backend.ensure_image(PullImage(reference), progress.append) == image_id
    assert progress == []  # resolved once per backend

    always = DockerBackend(docker_client)
    assert always.ensure_image(PullImage(reference, policy="always"), progress.append) == image_id
    assert progress[-1] == f"pulling {reference}: Image is up to date for {reference}"

    registry.stop(timeout=1)
    offline = DockerBackend(docker_client)
    with pytest.raises(
        ImageError, match=r"A local copy .* exists; set the pull policy to 'missing'"
    ):
        offline.ensure_image(PullImage(reference, policy="always"))
    assert offline.ensure_image(PullImage(reference, policy="missing")) == image_id


def test_pull_progress_is_summarised_at_most_once_a_second() -> None:
    now = [0.0]
    summary = _PullProgress("x:1", clock=lambda: now[0])
    events: list[dict[str, Any]] = [{"status": "Pulling from library/x", "id": "1"}]
    events += [{"status": "Pulling fs layer", "id": layer} for layer in ("a", "b")]
    for current in range(0, 10_000_001, 1_000_000):
        events.append(
            {
                "status": "Downloading",
                "id": "a",
                "progressDetail": {"current": current, "total": 10_000_000},
            }
        )
    events += [{"status": "Pull complete", "id": "a"}, {"status": "Already exists", "id": "b"}]
    events.append({"status": "Status: Downloaded newer image for x:1"})

    texts = []
    for event in events:
        now[0] += 0.3
        text = summary.feed(event)
        if text is not None:
            texts.append(text)

    assert texts[0] == "pulling x:1"
    assert texts[-1] == "pulling x:1: Downloaded newer image for x:1"
    assert 3 <= len(texts) <= 2 + len(events) * 0.3
    assert "0/2 layers done" in texts[1]
    assert summary.summary() == "pulling x:1: 2/2 layers done, 10.0/10.0 MB"


# -- workspaces and cleanup -------------------------------------------------------------


def test_workspace_seed_unpacks_a_tar_into_the_volume_without_any_task_image(
    backend: DockerBackend, make_spec: MakeSpec, workspace: Workspace, docker_client: Any
) -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        entry = tarfile.TarInfo("inputs/data.csv")
        entry.size = 4
        archive.addfile(entry, io.BytesIO(b"a,b\n"))

    workspace.seed(buffer.getvalue())
    helper = docker_client.api.inspect_image(HELPER_IMAGE)
    assert helper["Size"] == 0  # an empty image: no registry, no task image needed

    lines, _ = run(backend, make_spec(("cat", "/workspace/inputs/data.csv")))
    assert [line.line for line in lines] == ["a,b"]


def test_cleanup_removes_containers_and_volumes_by_label(
    backend: DockerBackend, make_spec: MakeSpec, docker_client: Any, labels: dict[str, str]
) -> None:
    running = backend.start(make_spec(("sleep", "300")))
    ended = backend.start(make_spec(("true",)))
    backend.wait(ended)
    other_labels = {TEST_LABEL: labels[TEST_LABEL] + "-other"}
    survivor_workspace = backend.workspace(f"other{other_labels[TEST_LABEL][:12]}", other_labels)
    survivor_workspace.create()
    survivor = survivor_workspace.name
    try:
        # two containers and the workspace volume of `make_spec`
        assert backend.cleanup(labels) == 3
        label = f"{TEST_LABEL}={labels[TEST_LABEL]}"
        assert docker_client.api.containers(all=True, filters={"label": label}) == []
        assert not docker_client.api.volumes(filters={"label": label})["Volumes"]
        assert docker_client.api.inspect_volume(survivor)["Name"] == survivor
        assert backend.cleanup(labels) == 0
    finally:
        assert backend.cleanup(other_labels) == 1
    with pytest.raises(docker.errors.NotFound):
        docker_client.api.inspect_container(running)


def test_cleanup_refuses_an_empty_label_set(backend: DockerBackend) -> None:
    with pytest.raises(ValueError, match="at least one label"):
        backend.cleanup({})


def test_remove_workspace_tolerates_a_missing_volume(
    backend: DockerBackend, labels: dict[str, str], docker_client: Any
) -> None:
    workspace = backend.workspace(uuid.uuid4().hex, labels)
    workspace.create()
    assert docker_client.api.inspect_volume(workspace.name)["Labels"] == labels
    assert workspace.exists()
    workspace.remove()
    assert not workspace.exists()
    workspace.remove()  # a second time: nothing to do, no error
    assert not workspace.exists()


# -- reaching the engine ----------------------------------------------------------------

ADVICE = (
    "Is Docker running? Start it (e.g. 'sudo systemctl start docker' or Docker Desktop) "
    "or point DOCKER_HOST at a running engine."
)


def test_check_passes_and_describe_names_the_engine(
    backend: DockerBackend, docker_client: Any
) -> None:
    assert backend.check() is None
    engine = backend.describe()
    assert engine.backend == "docker"
    assert engine.version == docker_client.version()["Version"]
    assert docker_client.info()["OperatingSystem"] in engine.os


def test_an_unreachable_tcp_engine_is_one_line_with_advice() -> None:
    # version given: without it docker-py asks the engine for it in the constructor
    client = docker.DockerClient(base_url="tcp://127.0.0.1:1", version="1.41")
    with pytest.raises(BackendError) as caught:
        DockerBackend(client).check()
    client.close()

    assert (
        str(caught.value)
        == f"cannot reach the Docker engine at tcp://127.0.0.1:1: connection refused. {ADVICE}"
    )


@pytest.fixture
def collect_leaked_sockets() -> Iterator[None]:
    """docker-py's UnixHTTPConnection.connect leaves the socket of a failed connect to the
    garbage collector: collect it within the test, whose mark ignores the warning."""
    yield
    gc.collect()


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.usefixtures("collect_leaked_sockets")
def test_from_env_names_the_docker_host_it_could_not_reach(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/docker.sock")
    with pytest.raises(BackendError) as caught:
        DockerBackend.from_env()

    assert str(caught.value) == (
        f"cannot reach the Docker engine at unix://{tmp_path}/docker.sock: "
        f"the socket does not exist. {ADVICE}"
    )


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.usefixtures("collect_leaked_sockets")
def test_a_socket_nobody_listens_on_is_connection_refused(tmp_path: Path) -> None:
    path = tmp_path / "docker.sock"
    with socket.socket(socket.AF_UNIX) as bound:
        bound.bind(str(path))  # bound but not listening: connect() is refused
        client = docker.DockerClient(base_url=f"unix://{path}", version="1.41")
        with pytest.raises(BackendError) as caught:
            DockerBackend(client).check()
        client.close()

    assert (
        str(caught.value)
        == f"cannot reach the Docker engine at unix://{path}: connection refused. {ADVICE}"
    )
