"""Bind sources in every form people write, against both kinds of engine, from a runner on
Linux and on Windows (the platform is a parameter: no real Windows needed), and from a
runner inside a container of its engine."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PureWindowsPath
from typing import Any

import pytest

from runner.errors import BackendError, HostPathError
from runner.hostpaths import (
    HOST_PATH_MAP_ENV,
    BindSourceTranslator,
    EngineFacts,
    PathMapping,
    Platform,
    RunnerPlace,
    bind_source_problem,
    mappings_from_mounts,
    parse_host_path,
    parse_host_path_map,
    runner_place,
    translate_bind_source,
)

DESKTOP = EngineFacts("Docker Desktop", "linux", "npipe:////./pipe/docker_engine")
LINUX = EngineFacts("Debian GNU/Linux 12 (bookworm)", "linux", "tcp://build-host:2376")
WINDOWS_ENGINE = EngineFacts("Microsoft Windows Server Version 2022", "windows", "npipe://")
ON_WINDOWS = RunnerPlace(platform="windows")
ON_LINUX = RunnerPlace(platform="posix")
IN_WSL = RunnerPlace(platform="posix", wsl_distro="Ubuntu")

DD = "/run/desktop/mnt/host/c/Users/me/Data Engg"


@dataclass(frozen=True)
class Refused:
    """The translation raises HostPathError whose message contains all of `words`."""

    words: tuple[str, ...]

    def __init__(self, *words: str) -> None:
        object.__setattr__(self, "words", words)


WINDOWS_PATH = Refused("is a Windows path", "Linux engine", "tcp://build-host:2376", "files:")

# (source, runner, engine, expected)
TABLE: list[tuple[str, RunnerPlace, EngineFacts, str | Refused]] = [
    # C:\ with backslashes, the way Explorer copies it
    (r"C:\Users\me\Data Engg", ON_WINDOWS, DESKTOP, DD),
    (r"C:\Users\me\Data Engg", ON_LINUX, DESKTOP, DD),
    (r"C:\Users\me\Data Engg", ON_WINDOWS, LINUX, WINDOWS_PATH),
    (r"C:\Users\me\Data Engg", ON_LINUX, LINUX, WINDOWS_PATH),
    (r"C:\Users\me\Data Engg", ON_LINUX, LINUX, Refused("'/mnt/c/Users/me/Data Engg'")),
    # forward slashes, as in the README and docker compose files
    ("C:/Users/me/Data Engg", ON_WINDOWS, DESKTOP, DD),
    ("C:/Users/me/Data Engg", ON_LINUX, DESKTOP, DD),
    ("C:/Users/me/Data Engg", ON_WINDOWS, LINUX, WINDOWS_PATH),
    ("C:/Users/me/Data Engg", ON_LINUX, LINUX, WINDOWS_PATH),
    # a lower-case drive, a trailing separator, mixed separators
    ("c:\\Users\\me\\Data Engg\\", ON_WINDOWS, DESKTOP, DD),
    ("c:/Users\\me/Data Engg", ON_LINUX, DESKTOP, DD),
    ("c:\\Users\\me\\Data Engg", ON_WINDOWS, LINUX, WINDOWS_PATH),
    # Git Bash: /c/... is drive C only when the runner is on Windows
    ("/c/Users/me/Data Engg", ON_WINDOWS, DESKTOP, DD),
    ("/c/Users/me/Data Engg", ON_WINDOWS, LINUX, WINDOWS_PATH),
    ("/c/Users/me/Data Engg", ON_LINUX, DESKTOP, "/c/Users/me/Data Engg"),
    ("/c/Users/me/Data Engg", ON_LINUX, LINUX, "/c/Users/me/Data Engg"),
    # Git Bash without path conversion: //c/... is drive C everywhere
    ("//c/Users/me/Data Engg", ON_WINDOWS, DESKTOP, DD),
    ("//c/Users/me/Data Engg", ON_LINUX, DESKTOP, DD),
    ("//c/Users/me/Data Engg", ON_WINDOWS, LINUX, WINDOWS_PATH),
    ("//c/Users/me/Data Engg", ON_LINUX, LINUX, WINDOWS_PATH),
    # a WSL distro's files, seen from Windows
    (
        r"\\wsl$\Ubuntu\home\me\Data Engg",
        ON_WINDOWS,
        DESKTOP,
        Refused("WSL distro 'Ubuntu'", "docker/for-win#5888", "'/home/me/Data Engg'"),
    ),
    (r"\\wsl$\Ubuntu\home\me\Data Engg", IN_WSL, DESKTOP, "/home/me/Data Engg"),
    (r"\\wsl$\Debian\home\me", IN_WSL, DESKTOP, Refused("WSL distro 'Debian'")),
    (r"\\wsl$\Ubuntu\home\me\Data Engg", ON_LINUX, DESKTOP, Refused("WSL distro 'Ubuntu'")),
    (r"\\wsl$\Ubuntu\home\me\Data Engg", ON_WINDOWS, LINUX, WINDOWS_PATH),
    (r"\\wsl$\Ubuntu\home\me\Data Engg", ON_LINUX, LINUX, WINDOWS_PATH),
    (r"\\wsl.localhost\Ubuntu\home\me", ON_WINDOWS, DESKTOP, Refused("WSL distro 'Ubuntu'")),
    (r"\\WSL.LOCALHOST\ubuntu\home\me", IN_WSL, DESKTOP, "/home/me"),
    (r"\\wsl.localhost\Ubuntu\home\me", ON_WINDOWS, LINUX, WINDOWS_PATH),
    (r"\\wsl.localhost\Ubuntu\home\me", ON_LINUX, LINUX, WINDOWS_PATH),
    # a network share
    (r"\\fileserver\team\Data Engg", ON_WINDOWS, DESKTOP, Refused("network share", "files:")),
    (r"\\fileserver\team\Data Engg", ON_WINDOWS, LINUX, WINDOWS_PATH),
    # non-ASCII letters and spaces pass untouched
    (
        r"C:\Users\Zoë\Données 2024",
        ON_WINDOWS,
        DESKTOP,
        "/run/desktop/mnt/host/c/Users/Zoë/Données 2024",
    ),
    ("/home/zoë/Données 2024", ON_LINUX, LINUX, "/home/zoë/Données 2024"),
    (r"C:\Users\Zoë\Données", ON_LINUX, LINUX, WINDOWS_PATH),
    # other drives, the drive root, dots, the extended-length prefix
    (r"D:\data", ON_WINDOWS, DESKTOP, "/run/desktop/mnt/host/d/data"),
    ("C:\\", ON_WINDOWS, DESKTOP, "/run/desktop/mnt/host/c"),
    (r"C:\Users\me\.\x\..\Data Engg", ON_WINDOWS, DESKTOP, DD),
    (r"\\?\C:\Users\me\Data Engg", ON_WINDOWS, DESKTOP, DD),
    # POSIX paths: the engine's own (Desktop's VM, a Linux host)
    ("/var/run/docker.sock", ON_WINDOWS, DESKTOP, "/var/run/docker.sock"),
    ("/home/me/data", ON_LINUX, DESKTOP, "/home/me/data"),
    ("/home/me/data", ON_LINUX, LINUX, "/home/me/data"),
    ("/home/me/data/", ON_WINDOWS, LINUX, "/home/me/data"),
    # never valid: relative to a drive's current folder, rooted without a drive
    ("C:data", ON_WINDOWS, DESKTOP, Refused("relative to the current folder of drive C")),
    (r"\Users\me", ON_WINDOWS, DESKTOP, Refused("no drive letter")),
    ("data", ON_LINUX, LINUX, Refused("not an absolute path")),
    # Windows containers take Windows paths
    (r"C:\data", ON_WINDOWS, WINDOWS_ENGINE, "C:\\data"),
    ("c:/data/in here", ON_WINDOWS, WINDOWS_ENGINE, "C:\\data\\in here"),
    ("/data", ON_LINUX, WINDOWS_ENGINE, Refused("POSIX path", "Windows containers")),
]


def _id(row: tuple[str, RunnerPlace, EngineFacts, str | Refused]) -> str:
    source, place, engine, _ = row
    runner = "in-wsl" if place.wsl_distro else place.platform
    return f"{source} from {runner} to {engine.operating_system.split()[0]}"


@pytest.mark.parametrize(("source", "place", "engine", "expected"), TABLE, ids=map(_id, TABLE))
def test_every_form_against_every_engine(
    source: str, place: RunnerPlace, engine: EngineFacts, expected: str | Refused
) -> None:
    if isinstance(expected, str):
        assert translate_bind_source(source, engine, place) == expected
        return
    with pytest.raises(HostPathError) as caught:
        translate_bind_source(source, engine, place, entry="flow.yml: task 'load': volume")
    message = str(caught.value)
    assert message.startswith("flow.yml: task 'load': volume: ")
    assert "\n" not in message
    for word in expected.words:
        assert word in message, message


def test_the_error_is_a_backend_error_so_a_task_start_fails_with_it() -> None:
    assert issubclass(HostPathError, BackendError)


def test_a_relative_volume_resolved_on_windows_reaches_docker_desktop() -> None:
    """What specs.parse_mount does on Windows: the flow folder joined with `./data`."""
    flow_dir = PureWindowsPath(r"C:\Users\me\Data Engg\flows")
    source = str(flow_dir / "./data")
    assert source == r"C:\Users\me\Data Engg\flows\data"
    assert translate_bind_source(source, DESKTOP, ON_WINDOWS) == DD + "/flows/data"
    with pytest.raises(HostPathError, match="is a Windows path"):
        translate_bind_source(source, LINUX, ON_WINDOWS)


def test_a_flow_folder_on_a_wsl_share_opened_from_windows_is_refused_with_the_way_out() -> None:
    source = str(PureWindowsPath(r"\\wsl$\Ubuntu\home\me\flows") / "data")
    with pytest.raises(HostPathError, match="Run runner inside the 'Ubuntu' distro"):
        translate_bind_source(source, DESKTOP, ON_WINDOWS)


@pytest.mark.parametrize(
    ("source", "platform", "kind"),
    [
        (r"C:\x", "posix", "drive"),
        ("/c/x", "windows", "drive"),
        ("/c/x", "posix", "posix"),
        ("//c/x", "posix", "drive"),
        (r"\\c\share\x", "windows", "unc"),  # backslashes: a server named c
        (r"\\wsl$\Ubuntu", "windows", "wsl"),
        (r"\\?\UNC\server\share\x", "windows", "unc"),
    ],
)
def test_parse_host_path_kinds(source: str, platform: Platform, kind: str) -> None:
    parsed = parse_host_path(source, platform)
    assert parsed is not None and parsed.kind == kind


@pytest.mark.parametrize("source", ["relative/x", "C:x", r"\x", r"\\server", ""])
def test_parse_host_path_rejects_what_is_not_absolute(source: str) -> None:
    assert parse_host_path(source, "windows") is None


def test_bind_source_problem_is_for_validate() -> None:
    assert bind_source_problem(r"C:\Users\me\Data Engg") is None
    assert bind_source_problem("./data") is None
    assert "drive C" in (bind_source_problem("C:data") or "")
    assert "SERVER\\SHARE" in (bind_source_problem(r"\\server") or "")


# -- the runner in a container ------------------------------------------------------------

GITHUB_MOUNTS: list[
    dict[str, Any]
] = [  # `docker inspect` of a GitHub Actions job container, abridged
    {"Type": "bind", "Source": "/home/runner/work", "Destination": "/__w", "RW": True},
    {"Type": "bind", "Source": "/var/run/docker.sock", "Destination": "/var/run/docker.sock"},
    {
        "Type": "volume",
        "Name": "cache",
        "Source": "/var/lib/docker/volumes/cache/_data",
        "Destination": "/cache/",
    },
    {"Type": "tmpfs", "Source": "", "Destination": "/tmp"},
    {"Type": "bind", "Source": "/srv/big data", "Destination": "/__w/repo/repo/data"},
]


def _in_container(engine_mounts: list[dict[str, Any]]) -> RunnerPlace:
    return runner_place(
        platform="posix", environ={}, container="0123456789ab", mounts=engine_mounts
    )


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("/__w/repo/repo/flows/in", "/home/runner/work/repo/repo/flows/in"),
        ("/__w", "/home/runner/work"),
        ("/__w/repo/repo/data/2024", "/srv/big data/2024"),  # the nested mount wins
        ("/var/run/docker.sock", "/var/run/docker.sock"),
        ("/cache/x", "/var/lib/docker/volumes/cache/_data/x"),
        ("/__w/../__w/x", "/home/runner/work/x"),
    ],
)
def test_a_path_in_the_runners_container_becomes_the_host_path(source: str, expected: str) -> None:
    assert translate_bind_source(source, LINUX, _in_container(GITHUB_MOUNTS)) == expected


@pytest.mark.parametrize("source", ["/opt/flows/data", "/tmp/x", "/__wx/data", "/"])
def test_a_path_without_a_host_equivalent_is_refused(source: str) -> None:
    with pytest.raises(HostPathError) as caught:
        translate_bind_source(
            source, LINUX, _in_container(GITHUB_MOUNTS), entry="task 'a': volume './x:/x'"
        )
    message = str(caught.value)
    assert "inside the runner's own container (0123456789ab)" in message
    assert HOST_PATH_MAP_ENV in message and "docker run -v" in message
    assert "/__w" in message  # its mounts are listed


def test_a_windows_path_written_in_the_flow_is_not_the_containers() -> None:
    place = _in_container(GITHUB_MOUNTS)
    assert translate_bind_source(r"C:\Users\me\Data Engg", DESKTOP, place) == DD


def test_docker_desktop_reports_the_runners_mounts_in_its_own_form() -> None:
    place = _in_container(
        [
            {
                "Type": "bind",
                "Source": "/run/desktop/mnt/host/c/Users/me/flows",
                "Destination": "/flows",
            }
        ]
    )
    got = translate_bind_source("/flows/data", DESKTOP, place)
    assert got == "/run/desktop/mnt/host/c/Users/me/flows/data"


def test_the_path_map_replaces_the_mounts() -> None:
    place = runner_place(
        platform="posix",
        environ={HOST_PATH_MAP_ENV: " /flows=/home/me/flows , /data=/srv/data/"},
        container="0123456789ab",
        mounts=GITHUB_MOUNTS,
    )
    assert place.mapped_by == HOST_PATH_MAP_ENV
    assert translate_bind_source("/flows/x", LINUX, place) == "/home/me/flows/x"
    assert translate_bind_source("/data", LINUX, place) == "/srv/data"
    with pytest.raises(HostPathError) as caught:
        translate_bind_source("/__w/repo", LINUX, place)
    assert f"in none of the folders {HOST_PATH_MAP_ENV} maps" in str(caught.value)
    assert "/flows=/home/me/flows" in str(caught.value)


def test_the_path_map_may_name_a_windows_folder_for_docker_desktop() -> None:
    place = runner_place(
        platform="posix", environ={HOST_PATH_MAP_ENV: r"/flows=C:\Users\me\Data Engg"}
    )
    assert translate_bind_source("/flows/in", DESKTOP, place) == DD + "/in"
    with pytest.raises(HostPathError, match="is a Windows path"):
        translate_bind_source("/flows/in", LINUX, place)


def test_the_path_map_applies_even_outside_a_container() -> None:
    place = runner_place(platform="posix", environ={HOST_PATH_MAP_ENV: "/flows=/home/me/flows"})
    assert place.in_container
    assert translate_bind_source("/flows", LINUX, place) == "/home/me/flows"


@pytest.mark.parametrize("value", ["flows=/x", "/flows", "/flows=", "=/x"])
def test_a_bad_path_map_names_the_variable(value: str) -> None:
    with pytest.raises(HostPathError, match=f"^{HOST_PATH_MAP_ENV}: "):
        parse_host_path_map(value)


def test_no_mounts_means_not_in_a_container() -> None:
    place = runner_place(platform="posix", environ={"WSL_DISTRO_NAME": "Ubuntu"})
    assert not place.in_container and place.wsl_distro == "Ubuntu"
    assert translate_bind_source("/opt/x", LINUX, place) == "/opt/x"


def test_mappings_from_mounts_keep_binds_and_volumes_only() -> None:
    assert mappings_from_mounts(GITHUB_MOUNTS) == (
        PathMapping("/__w", "/home/runner/work"),
        PathMapping("/var/run/docker.sock", "/var/run/docker.sock"),
        PathMapping("/cache", "/var/lib/docker/volumes/cache/_data"),
        PathMapping("/__w/repo/repo/data", "/srv/big data"),
    )


def test_the_translator_binds_the_facts() -> None:
    translate = BindSourceTranslator(DESKTOP, ON_WINDOWS)
    assert translate(r"C:\Users\me\Data Engg") == DD
    with pytest.raises(HostPathError, match=r"^vol: "):
        translate(r"\\fileserver\team", "vol")
