"""Which engine, TLS files and the wait, without an engine: contexts are files in a temp
HOME, a refused TCP port is a real socket on 127.0.0.1."""

from __future__ import annotations

import gc
import hashlib
import json
import subprocess
from pathlib import Path

import pytest

from runner.backends.docker import _translate
from runner.backends.docker_connection import (
    DEFAULT_ENGINE_WAIT_SECONDS,
    ENGINE_WAIT_SECONDS_ENV,
    EngineChoice,
    TLSFiles,
    _EngineAPI,
    _tls_config,
    choose_engine,
    connect,
    container_id_candidates,
    context_id,
    engine_wait_seconds,
)
from runner.errors import BackendError
from runner.settings import SettingError


def write_context(home: Path, name: str, host: str, *, current: bool = False) -> Path:
    """A context as `docker context create NAME --docker host=HOST` leaves it."""
    meta = home / ".docker" / "contexts" / "meta" / hashlib.sha256(name.encode()).hexdigest()
    meta.mkdir(parents=True)
    (meta / "meta.json").write_text(
        json.dumps(
            {
                "Name": name,
                "Metadata": {},
                "Endpoints": {"docker": {"Host": host, "SkipTLSVerify": False}},
            }
        )
    )
    if current:
        (home / ".docker" / "config.json").write_text(json.dumps({"currentContext": name}))
    return meta


def test_context_id_is_the_clis_sha256_of_the_name() -> None:
    assert context_id("ci") == hashlib.sha256(b"ci").hexdigest()


def test_the_local_engine_when_nothing_is_set(tmp_path: Path) -> None:
    choice = choose_engine({"HOME": str(tmp_path)}, "posix")
    assert choice.host == "unix:///var/run/docker.sock"
    assert "DOCKER_HOST and DOCKER_CONTEXT are unset" in choice.reason


def test_the_named_pipe_is_the_default_on_windows(tmp_path: Path) -> None:
    choice = choose_engine({"USERPROFILE": str(tmp_path)}, "windows")
    assert choice.host == "npipe:////./pipe/docker_engine"


def test_the_current_context_is_followed(tmp_path: Path) -> None:
    write_context(tmp_path, "remote", "tcp://10.0.0.9:2375", current=True)
    choice = choose_engine({"HOME": str(tmp_path)}, "posix")
    assert (choice.host, choice.context, choice.tls) == ("tcp://10.0.0.9:2375", "remote", None)
    assert "current context of" in choice.reason and "'remote'" in choice.reason


def test_docker_context_wins_over_the_current_context(tmp_path: Path) -> None:
    write_context(tmp_path, "remote", "tcp://10.0.0.9:2375", current=True)
    write_context(tmp_path, "other", "tcp://10.0.0.8:2375")
    choice = choose_engine({"HOME": str(tmp_path), "DOCKER_CONTEXT": "other"}, "posix")
    assert choice.host == "tcp://10.0.0.8:2375"
    assert choice.reason == "DOCKER_CONTEXT=other names context 'other'"


def test_docker_host_wins_over_docker_context(tmp_path: Path) -> None:
    write_context(tmp_path, "other", "tcp://10.0.0.8:2375", current=True)
    env = {"HOME": str(tmp_path), "DOCKER_CONTEXT": "other", "DOCKER_HOST": "tcp://h:2375"}
    choice = choose_engine(env, "posix")
    assert choice.host == "tcp://h:2375"
    assert choice.reason == "DOCKER_HOST is set (it wins over DOCKER_CONTEXT=other)"


def test_docker_context_default_is_the_local_engine(tmp_path: Path) -> None:
    write_context(tmp_path, "remote", "tcp://10.0.0.9:2375", current=True)
    choice = choose_engine({"HOME": str(tmp_path), "DOCKER_CONTEXT": "default"}, "posix")
    assert choice.host == "unix:///var/run/docker.sock"


def test_docker_config_moves_the_config_folder(tmp_path: Path) -> None:
    write_context(tmp_path, "remote", "tcp://10.0.0.9:2375", current=True)
    moved = tmp_path / "elsewhere"
    (tmp_path / ".docker").rename(moved)
    choice = choose_engine({"HOME": "/nonexistent", "DOCKER_CONFIG": str(moved)}, "posix")
    assert choice.host == "tcp://10.0.0.9:2375"


def test_a_missing_context_is_an_error_not_another_engine(tmp_path: Path) -> None:
    with pytest.raises(BackendError) as caught:
        choose_engine({"HOME": str(tmp_path), "DOCKER_CONTEXT": "gone"}, "posix")
    assert "Docker context 'gone' (DOCKER_CONTEXT=gone) does not exist" in str(caught.value)
    (tmp_path / ".docker").mkdir()
    (tmp_path / ".docker" / "config.json").write_text('{"currentContext": "gone"}')
    with pytest.raises(BackendError, match=r"context 'gone' .*config.json.* does not exist"):
        choose_engine({"HOME": str(tmp_path)}, "posix")


def test_a_context_with_tls_files_uses_them(tmp_path: Path) -> None:
    write_context(tmp_path, "secure", "tcp://dind:2376", current=True)
    tls = tmp_path / ".docker" / "contexts" / "tls" / context_id("secure") / "docker"
    tls.mkdir(parents=True)
    choice = choose_engine({"HOME": str(tmp_path)}, "posix")
    assert choice.tls is not None and choice.tls.folder == tls and choice.tls.verify
    assert "context 'secure'" in choice.tls.origin


@pytest.mark.parametrize(
    ("env", "verify", "origin"),
    [
        (
            {"DOCKER_TLS_VERIFY": "1", "DOCKER_CERT_PATH": "/certs/client"},
            True,
            "DOCKER_CERT_PATH=/certs/client",
        ),
        ({"DOCKER_CERT_PATH": "/certs/client"}, False, "DOCKER_CERT_PATH=/certs/client"),
        ({"DOCKER_TLS_VERIFY": "1"}, True, "DOCKER_CERT_PATH (unset, so /home/u/.docker)"),
    ],
)
def test_tls_from_the_environment(env: dict[str, str], verify: bool, origin: str) -> None:
    choice = choose_engine({"HOME": "/home/u", "DOCKER_HOST": "tcp://docker:2376", **env})
    assert choice.tls is not None
    assert (choice.tls.verify, choice.tls.origin) == (verify, origin)


def test_no_tls_for_a_socket_or_without_the_variables() -> None:
    assert choose_engine({"DOCKER_HOST": "tcp://docker:2375"}).tls is None
    assert choose_engine({"DOCKER_HOST": "tcp://d:2375", "DOCKER_TLS_VERIFY": ""}).tls is None


@pytest.mark.parametrize(
    ("text", "seconds"), [("", DEFAULT_ENGINE_WAIT_SECONDS), ("0", 0.0), ("2.5", 2.5)]
)
def test_engine_wait_seconds(text: str, seconds: float) -> None:
    assert engine_wait_seconds({ENGINE_WAIT_SECONDS_ENV: text}) == seconds


@pytest.mark.parametrize("text", ["-1", "soon", "nan"])
def test_a_bad_engine_wait_names_the_variable(text: str) -> None:
    with pytest.raises(SettingError, match=f"^{ENGINE_WAIT_SECONDS_ENV} must be a number"):
        engine_wait_seconds({ENGINE_WAIT_SECONDS_ENV: text})


# -- TLS files ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA and a client certificate made with openssl, as dind makes them."""
    folder = tmp_path_factory.mktemp("certs")

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True)

    run(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca-key.pem",
        "-out",
        "ca.pem",
        "-days",
        "1",
        "-subj",
        "/CN=test-ca",
    )
    run(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "key.pem",
        "-out",
        "client.csr",
        "-subj",
        "/CN=client",
    )
    run(
        "x509",
        "-req",
        "-in",
        "client.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca-key.pem",
        "-CAcreateserial",
        "-out",
        "cert.pem",
        "-days",
        "1",
    )
    return folder


def _files(folder: Path) -> TLSFiles:
    return TLSFiles(folder, True, f"DOCKER_CERT_PATH={folder}")


def test_good_tls_files_make_a_tls_config(certs: Path) -> None:
    config = _tls_config(_files(certs))
    assert config.cert == (str(certs / "cert.pem"), str(certs / "key.pem"))
    assert config.verify is True and config.ca_cert == str(certs / "ca.pem")


def test_a_missing_key_is_one_line_naming_the_file_and_the_variable(
    certs: Path, tmp_path: Path
) -> None:
    for name in ("ca.pem", "cert.pem"):
        (tmp_path / name).write_bytes((certs / name).read_bytes())
    choice = EngineChoice("tcp://127.0.0.1:1", "DOCKER_HOST is set", _files(tmp_path))
    with pytest.raises(BackendError) as caught:
        connect(choice, _translate, wait_s=0)
    assert str(caught.value) == (
        f"cannot reach the Docker engine at tcp://127.0.0.1:1: the TLS file key.pem is "
        f"missing: no {tmp_path / 'key.pem'} (DOCKER_CERT_PATH={tmp_path}). Set "
        "DOCKER_CERT_PATH to the folder with ca.pem, cert.pem and key.pem"
    )


def test_missing_files_are_waited_for(certs: Path, tmp_path: Path) -> None:
    """The dind service writes its certificates while the job starts: the files appear
    during the wait, and the connection then gets past them (to a refused port here)."""
    now = [0.0]
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        now[0] += seconds
        if len(sleeps) == 3:
            for name in ("ca.pem", "cert.pem", "key.pem"):
                (tmp_path / name).write_bytes((certs / name).read_bytes())

    choice = EngineChoice("tcp://127.0.0.1:1", "DOCKER_HOST is set", _files(tmp_path))
    with pytest.raises(BackendError) as caught:
        connect(choice, _translate, wait_s=5, clock=lambda: now[0], sleep=sleep)
    assert "connection refused" in str(caught.value)
    assert "still connection refused after waiting 5 s (RUNNER_ENGINE_WAIT_SECONDS)" in str(
        caught.value
    )
    assert len(sleeps) == 10 and sum(sleeps) == pytest.approx(5)


def test_a_broken_key_is_one_line_naming_it(certs: Path, tmp_path: Path) -> None:
    for name in ("ca.pem", "cert.pem"):
        (tmp_path / name).write_bytes((certs / name).read_bytes())
    (tmp_path / "key.pem").write_text("not a key\n")
    with pytest.raises(BackendError) as caught:
        _tls_config(_files(tmp_path))
    message = str(caught.value)
    assert message.startswith(f"cannot use {tmp_path / 'cert.pem'} with {tmp_path / 'key.pem'}")
    assert f"DOCKER_CERT_PATH={tmp_path}" in message and "\n" not in message


def test_a_ca_that_is_not_pem_is_one_line_naming_it(certs: Path, tmp_path: Path) -> None:
    for name in ("cert.pem", "key.pem"):
        (tmp_path / name).write_bytes((certs / name).read_bytes())
    (tmp_path / "ca.pem").write_text("garbage\n")
    with pytest.raises(BackendError, match=f"cannot use {tmp_path / 'ca.pem'} as the engine's CA"):
        _tls_config(_files(tmp_path))


def test_the_engines_ca_wins_over_requests_ca_bundle(
    certs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """requests would send REQUESTS_CA_BUNDLE as `verify` for every request
    (psf/requests#3829); the client keeps the engine's CA. version= avoids the ping."""
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/ssl/certs/ca-certificates.crt")
    monkeypatch.setenv("CURL_CA_BUNDLE", "/etc/ssl/certs/ca-certificates.crt")
    api = _EngineAPI(base_url="tcp://docker:2376", tls=_tls_config(_files(certs)), version="1.41")
    settings = api.merge_environment_settings("https://docker:2376/_ping", {}, None, None, None)
    assert settings["verify"] == str(certs / "ca.pem")
    # an explicit per-request choice still wins, as in requests
    assert api.merge_environment_settings("https://x", {}, None, False, None)["verify"] is False
    api.close()


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_missing_local_socket_is_not_waited_for(tmp_path: Path) -> None:
    """docker-py leaves the socket of a failed connect to the garbage collector."""
    choice = EngineChoice(f"unix://{tmp_path}/docker.sock", "DOCKER_HOST is set")
    slept: list[float] = []
    with pytest.raises(BackendError, match="the socket does not exist"):
        connect(choice, _translate, wait_s=60, sleep=slept.append)
    assert slept == []
    gc.collect()


# -- the runner's own container -----------------------------------------------------------

ID = "4f2a" + "0" * 60
OTHER = "9b1c" + "1" * 60


def test_container_id_candidates_from_mountinfo_cgroup_and_hostname() -> None:
    mountinfo = (
        f"612 590 0:52 /docker/containers/{ID}/resolv.conf /etc/resolv.conf rw - ext4 /dev/sda1 rw\n"
        f"613 590 0:52 /docker/containers/{ID}/hostname /etc/hostname rw - ext4 /dev/sda1 rw\n"
    )
    cgroup = f"12:memory:/docker/{OTHER}\n0::/system.slice/docker-{OTHER}.scope\n"
    assert container_id_candidates(mountinfo, cgroup, ID[:12]) == (ID, OTHER, ID[:12])
    assert container_id_candidates("", "0::/\n", "laptop") == ()
