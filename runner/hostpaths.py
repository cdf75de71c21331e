"""Bind-mount sources as the engine must see them: Windows forms, Docker Desktop, and the
runner running in a container of the engine it drives.

Pure: strings and frozen values in, a string or a HostPathError out; no docker import, no
I/O, and the runner's platform is a parameter (never `os.name`), so every case is testable
on Linux. Three steps, in this order (`translate_bind_source`):

1. Parse the source in every form people write (`parse_host_path`): `C:\\Users\\me\\Data Engg`,
   `C:/Users/me`, `c:\\...`, `/c/Users/...` (Git Bash, when the runner is on Windows),
   `//c/Users/...` (Git Bash without path conversion), `\\\\wsl$\\Ubuntu\\home\\me`,
   `\\\\wsl.localhost\\Ubuntu\\...`, `\\\\server\\share\\...`, and POSIX paths.
2. When the runner runs in a container, a POSIX path names a file inside THAT container,
   while the engine resolves bind sources on its host: map it through the runner's own
   mounts (or RUNNER_HOST_PATH_MAP, which replaces them) to the host path, or refuse.
3. Write it as the engine takes it: Docker Desktop wants a Windows drive as
   `/run/desktop/mnt/host/c/...` through the API (docker/for-win#5066, #6628: the CLI's
   own `C:\\` rewriting is not applied to API calls); a Linux engine cannot see Windows
   folders at all; a Windows engine (Windows containers) takes `C:\\...` as it is.

Docker Desktop and WSL (docker/for-win#4812, #5888): Desktop's engine runs in its own VM
and reaches a distro's files only through the WSL integration's socket proxy inside that
distro, which rewrites `/home/me/...` to a bind under
`/run/desktop/mnt/host/wsl/docker-desktop-bind-mounts/DISTRO/HASH` on each request. From
Windows there is no such rewriting and `\\\\wsl$\\...` cannot be mounted. So a `\\\\wsl$` path
becomes the distro's own POSIX path when the runner runs inside that distro (the proxy does
the rest), and is refused with the way out otherwise.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from runner.errors import HostPathError
from runner.settings import HOST_PATH_MAP_ENV, host_path_map

Platform = Literal["posix", "windows"]
PathKind = Literal["posix", "drive", "wsl", "unc"]

"""`/flows=/home/me/flows,/data=/srv/data`: folders in the runner's container and the same
folders on the engine's host; set, it replaces the detection through the runner's mounts."""

DOCKER_DESKTOP_DRIVES = "/run/desktop/mnt/host"
"""Where Docker Desktop's engine (WSL 2 and Hyper-V backends) sees the Windows drives."""

WSL_SERVERS = ("wsl$", "wsl.localhost")
_DRIVE = re.compile(r"^([A-Za-z]):(?:[\\/]|$)")
_SEPARATORS = re.compile(r"[\\/]+")


@dataclass(frozen=True)
class EngineFacts:
    """What the engine says about itself in `/info`, and where it is (for messages)."""

    operating_system: str = ""  # "Docker Desktop", "Debian GNU/Linux 12 (bookworm)", ...
    os_type: str = "linux"  # "linux" or "windows" (Windows containers)
    host: str = ""  # unix:///var/run/docker.sock, tcp://docker:2376, npipe:////./pipe/...

    @property
    def is_docker_desktop(self) -> bool:
        return self.operating_system.strip().lower().startswith("docker desktop")

    @property
    def is_windows(self) -> bool:
        return self.os_type.strip().lower() == "windows"

    def describe(self) -> str:
        where = f" at {self.host}" if self.host else ""
        return f"the Docker engine{where} ({self.operating_system or self.os_type})"


@dataclass(frozen=True)
class PathMapping:
    """A folder inside the runner's container and the same folder on the engine's host."""

    inside: str
    host: str

    def __str__(self) -> str:
        return f"{self.inside}={self.host}"


@dataclass(frozen=True)
class RunnerPlace:
    """Where the runner process runs, as far as bind sources care.

    `mapped_by` is empty when the runner is not in a container of its engine (paths are
    the host's own); "mounts" when `mappings` come from its container's mounts; or
    HOST_PATH_MAP_ENV when the user gave them."""

    platform: Platform = "posix"
    wsl_distro: str | None = None  # WSL_DISTRO_NAME when the runner runs inside WSL
    container: str | None = None  # the runner's own container on the engine (short id)
    mappings: tuple[PathMapping, ...] = ()
    mapped_by: str = ""

    @property
    def in_container(self) -> bool:
        return bool(self.mapped_by)


@dataclass(frozen=True)
class HostPath:
    """A parsed absolute path: its form, its root, and the components below the root."""

    kind: PathKind
    parts: tuple[str, ...]
    drive: str = ""  # "c" (lower case) for kind "drive"
    server: str = ""  # "wsl$" / "wsl.localhost" for "wsl", the server for "unc"
    share: str = ""  # the distro for "wsl", the share for "unc"

    def posix(self) -> str:
        return "/" + "/".join(self.parts)

    def windows(self) -> str:
        rest = "\\".join(self.parts)
        if self.kind == "drive":
            return f"{self.drive.upper()}:\\{rest}"
        if self.kind in ("wsl", "unc"):
            return f"\\\\{self.server}\\{self.share}" + (f"\\{rest}" if rest else "")
        return "\\" + rest


def parse_host_path(source: str, platform: Platform = "posix") -> HostPath | None:
    """Parse an absolute path in any of the forms of the module docstring; None when it is
    not absolute (relative, drive-relative `C:data`, or rooted without a drive `\\Users`).

    `platform` is the runner's: only there does `/c/Users` mean drive C (Git Bash); on
    POSIX it is a folder named `c`. `//c/Users` is a drive on both (nobody names a POSIX
    folder that way, and Git Bash users write it to stop path conversion)."""
    text = source.strip()
    if text.startswith(("\\\\?\\", "//?/")):  # Win32 extended-length prefix
        text = text[4:]
        if text[:4].upper() in ("UNC\\", "UNC/"):
            text = "\\\\" + text[4:]
    drive = _DRIVE.match(text)
    if drive:
        return HostPath("drive", _normal_parts(text[2:], windows=True), drive=drive[1].lower())
    if len(text) > 2 and text[0] in "\\/" and text[1] in "\\/" and text[2] not in "\\/":
        pieces = [p for p in _SEPARATORS.split(text[2:]) if p]
        server = pieces[0]
        if text.startswith("//") and len(server) == 1 and server.isalpha():
            rest = _normal_parts("/".join(pieces[1:]), windows=True)
            return HostPath("drive", rest, drive=server.lower())
        if len(pieces) < 2:
            return None  # `\\server` without a share names nothing mountable
        kind: PathKind = "wsl" if server.lower() in WSL_SERVERS else "unc"
        return HostPath(
            kind,
            _normal_parts("/".join(pieces[2:]), windows=True),
            server=server.lower() if kind == "wsl" else server,
            share=pieces[1],
        )
    if text.startswith("/"):
        parts = _normal_parts(text, windows=False)
        if platform == "windows" and parts and len(parts[0]) == 1 and parts[0].isalpha():
            return HostPath("drive", parts[1:], drive=parts[0].lower())
        return HostPath("posix", parts)
    return None


def _normal_parts(text: str, *, windows: bool) -> tuple[str, ...]:
    """Components without empty ones and `.`, with `..` applied (never above the root)."""
    parts: list[str] = []
    for part in (_SEPARATORS if windows else re.compile("/+")).split(text):
        if part in ("", "."):
            continue
        if part == "..":
            if parts:
                parts.pop()
            continue
        parts.append(part)
    return tuple(parts)


def bind_source_problem(source: str, platform: Platform = "posix") -> str | None:
    """What is wrong with an absolute-looking bind source whatever the engine, for
    `runner validate`; None when it is fine (relative sources are the flow folder's)."""
    text = source.strip()
    if _DRIVE.match(text) is None and re.match(r"^[A-Za-z]:", text):
        return (
            f"'{source}' is relative to the current folder of drive {text[0].upper()}: "
            f"write it absolute, e.g. '{text[0].upper()}:\\{text[2:]}'"
        )
    if text.startswith("\\") and not text.startswith("\\\\"):
        return f"'{source}' has no drive letter: write it with one, e.g. 'C:{text}'"
    if text.startswith(("\\\\", "//")) and parse_host_path(text, platform) is None:
        return f"'{source}' names a server without a share: write \\\\SERVER\\SHARE\\FOLDER"
    return None


def translate_bind_source(
    source: str,
    engine: EngineFacts,
    runner: RunnerPlace | None = None,
    *,
    entry: str = "",
) -> str:
    """The bind source to send to `engine` for `source`, an absolute path as the runner
    sees it (a relative one already resolved against the flow's folder).

    `entry` names the volume for messages, e.g. "flow.yml: task 'load': volume
    './data:/data'". Raises HostPathError, one line that says what to do instead, for a
    Windows path on a Linux engine, a `\\\\wsl$` or network path Docker Desktop cannot
    mount, and a path inside the runner's container with no host equivalent."""
    place = runner if runner is not None else RunnerPlace()
    label = f"{entry}: " if entry else ""
    path = parse_host_path(source, place.platform)
    if path is None:
        problem = bind_source_problem(source, place.platform)
        raise HostPathError(
            f"{label}{problem or f'bind source {source!r} is not an absolute path'}"
        )
    if path.kind == "posix" and place.in_container:
        path = _to_host(path, source, engine, place, label)
    if engine.is_windows:
        return _for_windows_engine(path, source, engine, label)
    if engine.is_docker_desktop:
        return _for_docker_desktop(path, source, place, label)
    return _for_linux_engine(path, source, engine, label)


def _to_host(
    path: HostPath, source: str, engine: EngineFacts, place: RunnerPlace, label: str
) -> HostPath:
    """Map a path inside the runner's container to the engine host's path: the longest
    mapped folder containing it wins, as nested mounts shadow their parents."""
    best: PathMapping | None = None
    best_parts: tuple[str, ...] = ()
    for mapping in place.mappings:
        inside = _normal_parts(mapping.inside, windows=False)
        if path.parts[: len(inside)] == inside and (best is None or len(inside) > len(best_parts)):
            best, best_parts = mapping, inside
    if best is None:
        return _no_host_path(path, source, place, label)
    host_text = best.host.rstrip("/\\") or best.host
    rest = path.parts[len(best_parts) :]
    host_platform: Platform = "windows" if engine.is_docker_desktop else "posix"
    host = parse_host_path(host_text, host_platform)
    if host is None:
        raise HostPathError(
            f"{label}'{source}' maps to '{best.host}' ({place.mapped_by}: {best}), "
            "which is not an absolute path"
        )
    return HostPath(host.kind, host.parts + rest, host.drive, host.server, host.share)


def _no_host_path(path: HostPath, source: str, place: RunnerPlace, label: str) -> HostPath:
    folder = path.posix()
    if place.mapped_by == HOST_PATH_MAP_ENV:
        mapped = ", ".join(str(m) for m in place.mappings) or "nothing"
        raise HostPathError(
            f"{label}'{folder}' is in none of the folders {HOST_PATH_MAP_ENV} maps ({mapped}): "
            f"add one, e.g. {HOST_PATH_MAP_ENV}={place.mappings[0] if place.mappings else '/flows=/home/me/flows'},{folder}=HOST_PATH"
        )
    where = f" ({place.container})" if place.container else ""
    mounted = ", ".join(m.inside for m in place.mappings) or "none"
    raise HostPathError(
        f"{label}'{folder}' is inside the runner's own container{where}, which has no host "
        f"path for it (its mounts: {mounted}); the engine resolves bind sources on its host. "
        f"Mount that folder into the runner's container (docker run -v HOST_FOLDER:{folder}) "
        f"or set {HOST_PATH_MAP_ENV}={folder}=HOST_FOLDER"
    )


def _for_docker_desktop(path: HostPath, source: str, place: RunnerPlace, label: str) -> str:
    if path.kind == "drive":
        return "/".join((DOCKER_DESKTOP_DRIVES, path.drive, *path.parts))
    if path.kind == "posix":
        return path.posix()
    if path.kind == "wsl":
        inside = path.posix()
        if place.platform == "posix" and (place.wsl_distro or "").lower() == path.share.lower():
            return inside  # Desktop's WSL integration proxy of this distro rewrites it
        raise HostPathError(
            f"{label}'{source}' is a folder of the WSL distro '{path.share}', which Docker "
            "Desktop cannot bind-mount when runner runs on Windows (docker/for-win#5888). "
            f"Run runner inside the '{path.share}' distro (Docker Desktop's WSL integration "
            f"on), where it is '{inside}', or move the folder to a Windows drive"
        )
    raise HostPathError(
        f"{label}'{source}' is on the network share \\\\{path.server}\\{path.share}, which "
        "Docker Desktop cannot bind-mount: copy the files to a local drive, or deliver them "
        "with `files:`"
    )


def _for_linux_engine(path: HostPath, source: str, engine: EngineFacts, label: str) -> str:
    if path.kind == "posix":
        return path.posix()
    hint = ""
    if path.kind == "drive":
        hint = (
            f" (an engine installed inside WSL sees this drive as "
            f"'{'/'.join(('/mnt', path.drive, *path.parts))}')"
        )
    raise HostPathError(
        f"{label}'{source}' is a Windows path, but {engine.describe()} is a Linux engine "
        f"that cannot see Windows folders{hint}. Use a path on the engine's machine, or "
        "deliver the files with `files:`"
    )


def _for_windows_engine(path: HostPath, source: str, engine: EngineFacts, label: str) -> str:
    if path.kind != "posix":
        return path.windows()
    raise HostPathError(
        f"{label}'{source}' is a POSIX path, but {engine.describe()} runs Windows "
        "containers and takes Windows paths such as 'C:\\data'"
    )


@dataclass(frozen=True)
class BindSourceTranslator:
    """`translate_bind_source` with the facts of one engine and one runner bound: what a
    backend builds once and applies to every bind mount it creates."""

    engine: EngineFacts
    runner: RunnerPlace = RunnerPlace()

    def __call__(self, source: str, entry: str = "") -> str:
        return translate_bind_source(source, self.engine, self.runner, entry=entry)


# -- where the mappings come from -----------------------------------------------------------


def parse_host_path_map(text: str) -> tuple[PathMapping, ...]:
    """RUNNER_HOST_PATH_MAP: comma-separated `CONTAINER_PATH=HOST_PATH` pairs. The host
    side may be a Windows path (`/flows=C:\\Users\\me\\flows`) for Docker Desktop."""
    mappings: list[PathMapping] = []
    for raw in text.split(","):
        pair = raw.strip()
        if not pair:
            continue
        inside, sep, host = pair.partition("=")
        inside, host = inside.strip(), host.strip()
        if not sep or not inside.startswith("/") or not host:
            raise HostPathError(
                f"{HOST_PATH_MAP_ENV}: {pair!r} is not CONTAINER_PATH=HOST_PATH "
                "(an absolute path in the runner's container, '=', the same folder on the "
                "engine's host), e.g. /flows=/home/me/flows"
            )
        mappings.append(PathMapping(inside.rstrip("/") or "/", host))
    return tuple(mappings)


def mappings_from_mounts(mounts: Iterable[Mapping[str, Any]]) -> tuple[PathMapping, ...]:
    """The runner container's `Mounts` as the engine's inspect reports them (Type, Source,
    Destination): binds, and volumes by their folder on the engine's host. tmpfs and named
    pipes have no host folder to map."""
    mappings = []
    for mount in mounts:
        kind = str(mount.get("Type", "bind"))
        source = str(mount.get("Source") or "")
        destination = str(mount.get("Destination") or "")
        if kind in ("bind", "volume") and source and destination.startswith("/"):
            mappings.append(PathMapping(destination.rstrip("/") or "/", source))
    return tuple(mappings)


def runner_place(
    *,
    platform: Platform,
    environ: Mapping[str, str],
    container: str | None = None,
    mounts: Sequence[Mapping[str, Any]] | None = None,
) -> RunnerPlace:
    """Put the facts together: RUNNER_HOST_PATH_MAP wins over the container's mounts;
    `mounts` None means the runner is not in a container of this engine."""
    distro = environ.get("WSL_DISTRO_NAME") or None
    given = host_path_map(environ)
    if given:
        return RunnerPlace(
            platform, distro, container, parse_host_path_map(given), HOST_PATH_MAP_ENV
        )
    if mounts is None:
        return RunnerPlace(platform, distro)
    return RunnerPlace(platform, distro, container, mappings_from_mounts(mounts), "mounts")
