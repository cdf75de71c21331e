"""What a flow may do to the host and read from the runner's environment: the operator
decides, not the flow.

A flow is code someone hands to the runner (soon over HTTP), and its `volumes:`,
`network:` and `allowed_env` reach past the container. By default:

    named volumes (`cache:/cache`)                      allowed
    bind mounts inside the flow file's folder           allowed (`./data:/data`)
    any other host path                                 RUNNER_ALLOWED_MOUNTS=/that/path
                                                        (or a folder above it, or `*`)
    the Docker socket, or a folder holding it (`/`)     RUNNER_ALLOWED_MOUNTS naming the
                                                        socket itself; `*` never covers it
    network: host, container:NAME (ns:PATH)             RUNNER_ALLOW_HOST_NETWORK=1
    a name in `allowed_env`                             --env NAME or RUNNER_ALLOWED_ENV

`allowed_env` only declares what a flow needs; `--env NAME` (one run) and
`RUNNER_ALLOWED_ENV` (comma-separated, globs like `AWS_*`) allow it. A glob never matches
a `RUNNER_*` name (the database URL with its password, the secrets): those are allowed
only by their exact name.

Checked twice: when a flow is loaded (`runner validate`, and before a run) for values
written in the file, and after rendering, just before a container starts, so that an
input (`-i dir=/`) cannot smuggle in what the file could not say. Every refusal is a
`PolicyError` (exit 2) whose one-line message names the setting that would allow it.

Pure: the settings come in through `HostPolicy.from_env` (which reads them with
`runner.settings`), and symbolic links are followed only by the `resolve` function the
policy is given (`os.path.realpath` from `from_env`; none in unit tests), so a link in the
flow's folder pointing at `/` or at the socket is judged by where it leads.
"""

from __future__ import annotations

import contextlib
import fnmatch
import ntpath
import os
import posixpath
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import PurePath
from typing import Literal

from runner import settings
from runner.errors import PolicyError
from runner.flow import NAMED_VOLUME_RE, VOLUME_RE
from runner.messages import listing, shorten

__all__ = [
    "DOCKER_SOCKETS",
    "MAX_VARIABLE_BYTES",
    "HostPolicy",
    "check_environment_size",
    "check_inside_folder",
    "env_allowed",
    "visible_env",
]

DOCKER_SOCKETS = ("/var/run/docker.sock", "//./pipe/docker_engine")
"""Where the Docker engine listens on Linux and on Windows. Whoever mounts one controls
the engine, and through it the host. `HostPolicy.from_env` adds the others that exist
here (`/run/docker.sock`, `DOCKER_HOST`'s, rootless and Desktop engines')."""

_OTHER_SOCKETS = ("/run/docker.sock",)

_SOCKET_NAMES = frozenset({"docker.sock", "docker.sock.raw", "docker_engine"})
"""A file of one of these names is taken to be an engine's socket wherever it is
(rootless Docker, Docker Desktop, a second engine)."""

_HOST_NETWORKS = ("host",)
_JOINING_NETWORKS = ("container:", "ns:")  # another container's, or a namespace's, network
MAX_VARIABLE_BYTES = 128 * 1024
"""Linux refuses to start a process with one `NAME=value` longer than this
(MAX_ARG_STRLEN), whatever the total."""

_DRIVE = re.compile(r"^[A-Za-z]:[\\/]")

Kind = Literal["posix", "windows"]


@dataclass(frozen=True)
class _Key:
    """A host path reduced to what comparing paths needs: its kind and its parts, the
    first part being the root (`/`, `c:`, `\\\\.\\pipe`). Windows parts are lowercase."""

    kind: Kind
    parts: tuple[str, ...]

    def within(self, other: _Key) -> bool:
        """Whether this path is `other` or inside it."""
        return self.kind == other.kind and self.parts[: len(other.parts)] == other.parts


def _keys(path: str) -> tuple[_Key, ...]:
    """Every way a daemon may read an absolute host path: a path starting with `//` is a
    Windows device or share path, and on Linux the same as one starting with `/`; both
    readings are judged. A relative path has no key."""
    keys: list[_Key] = []
    if path.startswith("/"):
        normal = posixpath.normpath(path)
        keys.append(_Key("posix", ("/", *(p for p in normal.split("/") if p))))
    if _DRIVE.match(path) or path.startswith(("//", "\\\\")) or "\\" in path:
        normal = ntpath.normpath(path.replace("/", "\\"))
        drive, rest = ntpath.splitdrive(normal)
        if drive:
            parts = (drive.lower(), *(p.lower() for p in rest.split("\\") if p))
            keys.append(_Key("windows", parts))
    return tuple(keys)


def _is_absolute(path: str) -> bool:
    return path.startswith(("/", "\\")) or bool(_DRIVE.match(path))


@dataclass(frozen=True)
class HostPolicy:
    """What the operator allows flows on this runner to reach of the host.

    `allowed_mounts` are host path prefixes (or `*`); `sockets` the engine sockets to
    protect (DOCKER_SOCKETS and the one this runner talks to); `resolve` follows symbolic
    links of a host path (None: paths are judged as written).
    """

    allowed_mounts: tuple[str, ...] = ()
    allow_host_network: bool = False
    sockets: tuple[str, ...] = DOCKER_SOCKETS
    resolve: Callable[[str], str] | None = field(default=None, compare=False)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> HostPolicy:
        """The policy `RUNNER_ALLOWED_MOUNTS` and `RUNNER_ALLOW_HOST_NETWORK` set, guarding
        the well-known sockets and the one `DOCKER_HOST` (or the user's rootless or
        Desktop engine) names. Raises SettingError for a relative path in the list."""
        env = os.environ if environ is None else environ
        mounts = settings.allowed_mounts(env)
        for entry in mounts:
            if entry != "*" and not _is_absolute(entry):
                raise settings.SettingError(
                    f"{settings.ALLOWED_MOUNTS_ENV} holds host paths (absolute, separated"
                    f" by ',') or *, not {shorten(repr(entry))}"
                )
        others = list(_OTHER_SOCKETS)
        docker_host = env.get("DOCKER_HOST", "")
        for scheme in ("unix://", "npipe://"):
            if docker_host.startswith(scheme):
                others.append(docker_host.removeprefix(scheme))
        for folder, name in (
            (env.get("XDG_RUNTIME_DIR"), "docker.sock"),
            (env.get("HOME"), ".docker/run/docker.sock"),
            (env.get("HOME"), ".docker/desktop/docker.sock"),
        ):
            if folder and folder.startswith("/"):
                others.append(posixpath.join(folder, name))
        # Only sockets that are there: a mount of `/` must not ask the operator to name
        # sockets of engines this machine does not run.
        found = [s for s in others if s.startswith("/") and os.path.lexists(s)]
        return cls(
            allowed_mounts=mounts,
            allow_host_network=settings.allow_host_network(env),
            sockets=tuple(dict.fromkeys([*DOCKER_SOCKETS, *found])),
            resolve=os.path.realpath if os.name == "posix" else None,
        )

    # -- volumes -----------------------------------------------------------------------

    def check_volume(self, volume: str, flow_dir: str | PurePath) -> None:
        """Raise PolicyError unless `volume` (`SOURCE:/TARGET[:ro|rw]`, as rendered) is
        allowed for a flow whose file is in `flow_dir`. A volume that is not of that form
        is left to the caller's own check (the flow model, or the rendered-task check)."""
        match = VOLUME_RE.match(volume)
        if match is None:
            return
        source = match["source"]
        if NAMED_VOLUME_RE.match(source) and not source.startswith("."):
            return  # a named volume: the engine's storage, not a host path
        folder = os.fspath(flow_dir)
        path = source if _is_absolute(source) else posixpath.join(folder, source)
        problem = self.host_path_problem(path, folder)
        if problem is not None:
            raise PolicyError(f"volume {shorten(repr(volume))}: {problem}")

    def host_path_problem(self, path: str, flow_dir: str) -> str | None:
        """Why a bind mount of host `path` is refused (None if it is allowed)."""
        keys = self._all_keys(path)
        if not keys:
            return f"{shorten(repr(path))} is not a usable host path"
        shown = self._shown(path, flow_dir)
        named = {
            key for entry in self.allowed_mounts if entry != "*" for key in self._all_keys(entry)
        }
        for socket, socket_keys in self._exposed_sockets(keys):
            if named.isdisjoint(socket_keys):
                what = (
                    "is the Docker socket"
                    if any(key in socket_keys for key in keys)
                    else f"holds the Docker socket {socket}"
                )
                return (
                    f"host path {shown} {what}, which gives control of the engine and so of"
                    f" the host; allow it by naming {socket} itself in"
                    f" {settings.ALLOWED_MOUNTS_ENV} (* does not cover it)"
                )
        if "*" in self.allowed_mounts:
            return None
        roots = [*self._all_keys(flow_dir), *named]
        if all(any(key.within(root) for root in roots) for key in keys):
            return None
        return (
            f"host path {shown} is outside the flow's folder {shorten(flow_dir)}; allow it"
            f" with {settings.ALLOWED_MOUNTS_ENV}={self._suggested(path)} (host paths"
            " separated by ',')"
        )

    def _shown(self, path: str, flow_dir: str) -> str:
        """`path` for a message: normalised, and where it leads when it is a link in the
        flow's folder (a link elsewhere, like /var/run, is the operator's own)."""
        normal = posixpath.normpath(path) if path.startswith("/") else path
        shown = shorten(normal)
        inside = any(k.within(r) for k in _keys(normal) for r in _keys(flow_dir))
        if inside and self.resolve is not None and not path.startswith("//"):
            try:
                real = self.resolve(path)
            except (OSError, ValueError):
                real = normal
            if real != normal:
                shown += f" (a link to {shorten(real)})"
        return shown

    def _suggested(self, path: str) -> str:
        """The entry that would allow `path`: where it leads, when a link leads on."""
        if self.resolve is not None and path.startswith("/") and not path.startswith("//"):
            try:
                return shorten(self.resolve(path))
            except (OSError, ValueError):
                pass
        return shorten(posixpath.normpath(path) if path.startswith("/") else path)

    def _all_keys(self, path: str) -> set[_Key]:
        """The keys of `path` as written and, when it can be resolved, of where its
        symbolic links lead."""
        keys = set(_keys(path))
        if self.resolve is not None and path.startswith("/") and not path.startswith("//"):
            # A NUL byte, a loop: judged as written.
            with contextlib.suppress(OSError, ValueError):
                keys.update(_keys(self.resolve(path)))
        return keys

    def _exposed_sockets(self, keys: set[_Key]) -> list[tuple[str, set[_Key]]]:
        """The sockets a mount of a path with these keys reaches: a socket itself, a
        folder holding a known one, or a file named like one."""
        found: list[tuple[str, set[_Key]]] = []
        for socket in self.sockets:
            socket_keys = self._all_keys(socket)
            if socket.startswith(("//", "\\\\")):  # a Windows pipe is no Linux path
                socket_keys = {k for k in socket_keys if k.kind == "windows"}
            if any(s.within(k) for s in socket_keys for k in keys):
                found.append((socket, socket_keys))
        for key in keys:
            if key.parts[-1] in _SOCKET_NAMES and not any(key in s for _, s in found):
                shown = "/".join(key.parts[1:])
                text = "/" + shown if key.kind == "posix" else f"{key.parts[0]}\\{shown}"
                found.append((text, {key}))
        return found

    # -- networks ----------------------------------------------------------------------

    def check_network(self, network: str | None) -> None:
        """Raise PolicyError for `host` or `container:NAME` unless the operator allows it."""
        if network is None or self.allow_host_network:
            return
        word = network.strip().lower()
        if word in _HOST_NETWORKS:
            what = "shares the host's network (its ports and local services) with the task"
        elif word.startswith(_JOINING_NETWORKS):
            what = "puts the task in another container's network"
        else:
            return
        raise PolicyError(
            f"network {shorten(repr(network))} {what}; allow it with"
            f" {settings.ALLOW_HOST_NETWORK_ENV}=1"
        )


# -- paths a flow reads from its own folder -------------------------------------------------


def check_inside_folder(
    path: str,
    folder: str | PurePath,
    *,
    what: str,
    resolve: Callable[[str], str] | None = None,
) -> None:
    """Raise PolicyError unless `path` (relative to `folder`, or absolute inside it) stays
    in `folder`: `files:` entries and file input defaults. With `resolve`, a link is judged
    by where it leads. `what` starts the message (`files: 'x'`)."""
    base = os.fspath(folder)
    outside = PolicyError(
        f"{what} is outside the flow's folder {shorten(base)}: the flow may only read files"
        " inside it"
    )
    if _is_absolute(path):
        candidate = path
    else:
        if ".." in re.split(r"[\\/]", path):
            raise outside
        candidate = posixpath.join(base, path)
    roots = set(_keys(base))
    targets = set(_keys(candidate))
    if resolve is not None:
        try:
            roots.update(_keys(resolve(base)))
            resolved = set(_keys(resolve(candidate)))
        except (OSError, ValueError):
            resolved = set()
        if resolved and not all(any(k.within(r) for r in roots) for k in resolved):
            raise outside
    if not targets or not all(any(k.within(r) for r in roots) for k in targets):
        raise outside


# -- the container's environment ------------------------------------------------------------


def check_environment_size(env: Mapping[str, str], limit: int) -> None:
    """Raise PolicyError if a container environment holds more than `limit` bytes (names
    and values, UTF-8), or one variable Linux would refuse."""
    total = 0
    for name, value in env.items():
        size = len(name.encode()) + len(value.encode()) + 2  # NAME=value and its NUL
        if size > MAX_VARIABLE_BYTES:
            raise PolicyError(
                f"env.{shorten(name)} is {size:,} bytes; Linux starts no process with a"
                f" variable over {MAX_VARIABLE_BYTES:,} bytes: pass it as a file"
                " (files:, or write it in the workspace)"
            )
        total += size
    if total > limit:
        raise PolicyError(
            f"the environment is {total:,} bytes, over the limit of {limit:,}; pass big"
            f" values as files, or raise {settings.MAX_ENV_BYTES_ENV}"
        )


# -- the runner's environment ---------------------------------------------------------------


def env_allowed(name: str, patterns: Iterable[str]) -> bool:
    """Whether one of `patterns` (names or globs) allows `name`. A glob never matches a
    `RUNNER_*` name: the runner's own settings are allowed only by their exact name."""
    for pattern in patterns:
        if pattern == name:
            return True
        if (
            not name.startswith("RUNNER_")
            and any(c in pattern for c in "*?[")
            and fnmatch.fnmatchcase(name, pattern)
        ):
            return True
    return False


def visible_env(
    declared: Sequence[str],
    given: Sequence[str] = (),
    *,
    where: str = "",
    environ: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The variables of the runner's environment a run's templates may read: those the
    flow declares in `allowed_env`, each of which the operator must allow (`given`, the
    `--env` names and globs of this run, or `RUNNER_ALLOWED_ENV`), and the exact names
    `given` (`--env NAME` lets this run read NAME even if the flow does not declare it).
    Names not set are left out: a template using one says so.

    Raises PolicyError listing every declared name not allowed; `where` (`flow.yml:4`)
    starts the message.
    """
    env = os.environ if environ is None else environ
    patterns = (*given, *settings.allowed_env(env))
    refused = [name for name in dict.fromkeys(declared) if not env_allowed(name, patterns)]
    if refused:
        prefix = f"{where}: " if where else ""
        raise PolicyError(
            f"{prefix}allowed_env: the flow reads {listing(refused)} from the runner's"
            " environment, which the operator has not allowed; allow with --env NAME"
            f" (for this run) or {settings.ALLOWED_ENV_ENV}={','.join(refused)}"
        )
    names = [*declared, *(name for name in given if not any(c in name for c in "*?["))]
    return {name: env[name] for name in sorted(set(names)) if name in env}
