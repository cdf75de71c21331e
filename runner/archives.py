"""Tar archives in and out of the workspace: `files:` and file inputs in, artifacts out.

    pack_files                the flow's `files:` and file inputs -> one tar (bytes) to
                              unpack at /workspace (Docker's put_archive)
    extract_artifacts         a tar stream of the workspace (Docker's get_archive) -> the
                              files matching a task's `artifacts:`, written under a folder
    artifact_roots            the smallest set of paths under /workspace whose archives
                              hold everything the patterns can match
    matches_artifact_pattern  whether one pattern selects one path
    Artifact                  one file copied out: where from, size, sha256, where to
    ArchiveError              a file or archive member refused, with the reason

No container engine here: the backend moves the bytes, this module decides what goes in
and what may come out. What comes out was written by a container, so it is treated as
hostile: absolute names, `..`, links, devices and absurd sizes are refused before a byte
is written, and nothing is ever written outside the destination folder, not even through
a symbolic link that was already there.
"""

from __future__ import annotations

import contextlib
import errno
import fnmatch
import hashlib
import io
import os
import secrets
import stat
import tarfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import IO, TYPE_CHECKING

from runner.errors import RunnerError

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

__all__ = [
    "DEFAULT_MAX_ARTIFACT_BYTES",
    "DEFAULT_MAX_ARTIFACT_FILES",
    "MAX_PACK_BYTES",
    "ArchiveError",
    "Artifact",
    "artifact_roots",
    "extract_artifacts",
    "matches_artifact_pattern",
    "pack_files",
]

MAX_PACK_BYTES = 512 * 1024**2
"""The most `pack_files` puts in one archive (file sizes added up). The archive is built
in memory: it carries a flow's scripts and small inputs, not data sets (mount a volume)."""

DEFAULT_MAX_ARTIFACT_BYTES = 10 * 1024**3
"""The most one `extract_artifacts` call writes (file sizes added up), unless told."""

DEFAULT_MAX_ARTIFACT_FILES = 100_000
"""The most files one `extract_artifacts` call writes, unless told."""

_COPY_BLOCK = 1024 * 1024
_GLOB_CHARS = frozenset("*?[")
_EXEC_BITS = 0o111


class ArchiveError(RunnerError):
    """A file that cannot be packed, or an archive member that will not be copied out."""

    exit_code = 1


@dataclass(frozen=True)
class Artifact:
    """One file copied out of the workspace.

    `path` is where it was, relative to /workspace (posix); `local_path` where it is now.
    """

    path: str
    size: int
    sha256: str
    local_path: Path


def _human(size: int) -> str:
    """`512 B`, `1.5 KiB`, `20.0 GiB`: sizes for messages."""
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{size} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


# -- into the workspace ------------------------------------------------------------------


@dataclass(frozen=True)
class _LocalFile:
    path: Path  # what to read (a symbolic link already followed)
    size: int
    executable: bool


def pack_files(
    patterns: Sequence[str],
    base_dir: Path,
    *,
    extra: Mapping[str, Path] = MappingProxyType({}),
    max_bytes: int = MAX_PACK_BYTES,
) -> bytes:
    """A tar of the files `patterns` name under `base_dir`, plus `extra`, to unpack at
    /workspace.

    A pattern is a file, a folder (taken whole) or a glob (`scripts/*.sh`, `**/*.py`),
    relative to `base_dir` or absolute inside it. Members are named by their path relative
    to `base_dir`; `extra` maps more member names to local files (file inputs:
    `inputs/ID/NAME`), which may live anywhere.

    Built in memory and returned as bytes (what the engine's put_archive takes), so it
    is capped at `max_bytes`, checked on the files' sizes before any is read.

    Members come in sorted order, folders before what they hold. Tasks may run as any
    user and share the workspace, so ownership is root and modes are open: folders 0o777,
    files 0o666, or 0o777 when the local file has an executable bit. A symbolic link under
    `base_dir` is followed (the archive holds the content) if it points inside
    `base_dir`; one pointing outside is refused.

    Raises ArchiveError naming the pattern or file: a pattern leaving `base_dir` or
    matching nothing, a link pointing outside it, something that is neither a file nor a
    folder (fifo, socket, device), a file that cannot be read, a name given twice, or a
    total over `max_bytes`.
    """
    base_given = Path(os.path.abspath(base_dir))
    try:
        base = base_given.resolve(strict=True)
    except OSError as exc:
        raise ArchiveError(f"files: cannot read the folder {base_given}: {_reason(exc)}") from exc
    if not base.is_dir():
        raise ArchiveError(f"files: {base_given} is not a folder")

    packer = _Packer(base)
    for pattern in patterns:
        relative = _relative_pattern(pattern, base_given, base)
        if _GLOB_CHARS.isdisjoint(relative):
            candidate = base if relative == "." else base / relative
            matches = [candidate] if os.path.lexists(candidate) else []
        else:
            matches = sorted(base.glob(relative))
        if not matches:
            raise ArchiveError(f"files: {pattern!r} matches nothing under {base}")
        for match in matches:
            name = match.relative_to(base).as_posix()
            packer.add(pattern, match, "" if name == "." else name)

    for member, local in extra.items():
        packer.add_extra(member, Path(local))

    return packer.build(max_bytes)


def _relative_pattern(pattern: str, base_given: Path, base: Path) -> str:
    """The pattern as a posix path relative to the base folder ("." for the folder itself);
    ArchiveError if it can lead outside."""
    outside = ArchiveError(
        f"files: {pattern!r} is outside the flow's folder {base_given}: give paths inside it"
    )
    if os.path.isabs(pattern):
        normal = Path(os.path.normpath(pattern))
        for root in (base, base_given):
            if normal.is_relative_to(root):
                return normal.relative_to(root).as_posix()
        raise outside
    if ".." in Path(pattern).parts:
        raise outside
    return Path(os.path.normpath(pattern)).as_posix()


class _Packer:
    """Collects what goes into the archive, checks it, then writes the tar."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.files: dict[str, _LocalFile] = {}
        self.origin: dict[str, str] = {}  # member name -> the pattern or input that added it
        self.dirs: dict[str, float] = {}  # member name -> mtime
        self.walked: set[str] = set()

    def add(self, pattern: str, path: Path, name: str, stack: tuple[Path, ...] = ()) -> None:
        """Add a file, or a folder with everything below it, found through `pattern`."""
        shown = name or "."
        try:
            real = path.resolve(strict=True)
            info = real.stat()
        except OSError as exc:
            raise ArchiveError(f"files: {pattern!r}: cannot read {path}: {_reason(exc)}") from exc
        if not real.is_relative_to(self.base):
            raise ArchiveError(
                f"files: {pattern!r}: '{shown}' is a symbolic link to {real}, outside the"
                f" flow's folder {self.base}; only links inside it are followed"
            )
        if stat.S_ISDIR(info.st_mode):
            if real in stack:
                raise ArchiveError(
                    f"files: {pattern!r}: '{shown}' is a symbolic link that loops back to"
                    f" its own parent {real}"
                )
            if name in self.walked:
                return
            self.walked.add(name)
            if name:
                self._add_dir(name, pattern, info.st_mtime)
            try:
                children = sorted(os.listdir(path))
            except OSError as exc:
                raise ArchiveError(
                    f"files: {pattern!r}: cannot list {path}: {_reason(exc)}"
                ) from exc
            for child in children:
                self.add(
                    pattern, path / child, f"{name}/{child}" if name else child, (*stack, real)
                )
        elif stat.S_ISREG(info.st_mode):
            local = _LocalFile(real, info.st_size, bool(info.st_mode & _EXEC_BITS))
            self._add_file(name, local, f"files: {pattern!r}")
        else:
            raise ArchiveError(
                f"files: {pattern!r}: '{shown}' is not a regular file or folder"
                f" ({_kind(info.st_mode)}); it cannot be copied"
            )

    def add_extra(self, member: str, local: Path) -> None:
        name = _clean_member_name(member)
        if name is None:
            raise ArchiveError(
                f"cannot copy {local} to the workspace as {member!r}: the name must be a"
                " relative path without '..'"
            )
        try:
            info = local.stat()
        except OSError as exc:
            raise ArchiveError(f"cannot copy {local} to /workspace/{name}: {_reason(exc)}") from exc
        if not stat.S_ISREG(info.st_mode):
            raise ArchiveError(
                f"cannot copy {local} to /workspace/{name}: it is {_kind(info.st_mode)},"
                " not a regular file"
            )
        local_file = _LocalFile(local.absolute(), info.st_size, bool(info.st_mode & _EXEC_BITS))
        self._add_file(name, local_file, f"{local}")

    def _add_file(self, name: str, local: _LocalFile, origin: str) -> None:
        known = self.files.get(name)
        if known is not None:
            if known.path == local.path:
                return  # the same file matched twice
            raise ArchiveError(
                f"/workspace/{name} would be written twice: by {self.origin[name]} and by {origin}"
            )
        if name in self.dirs:
            raise ArchiveError(
                f"/workspace/{name} would be both a folder ({self.origin[name]}) and a file ({origin})"
            )
        parts = name.split("/")
        for depth in range(1, len(parts)):
            parent = "/".join(parts[:depth])
            if parent in self.files:
                raise ArchiveError(
                    f"/workspace/{parent} would be both a file ({self.origin[parent]})"
                    f" and a folder ({origin})"
                )
            self.dirs.setdefault(parent, 0.0)
            self.origin.setdefault(parent, origin)
        self.files[name] = local
        self.origin[name] = origin

    def _add_dir(self, name: str, pattern: str, mtime: float) -> None:
        if name in self.files:
            raise ArchiveError(
                f"/workspace/{name} would be both a file ({self.origin[name]}) and a folder"
                f" (files: {pattern!r})"
            )
        self.dirs[name] = max(self.dirs.get(name, 0.0), mtime)
        self.origin.setdefault(name, f"files: {pattern!r}")
        parts = name.split("/")
        for depth in range(1, len(parts)):
            self.dirs.setdefault("/".join(parts[:depth]), 0.0)

    def build(self, max_bytes: int) -> bytes:
        total = sum(local.size for local in self.files.values())
        if total > max_bytes:
            biggest = sorted(self.files.items(), key=lambda item: -item[1].size)[:3]
            shown = ", ".join(f"{name} ({_human(local.size)})" for name, local in biggest)
            raise ArchiveError(
                f"the files to copy into /workspace add up to {_human(total)}, over the limit"
                f" of {_human(max_bytes)} (largest: {shown}); mount a volume for data this big"
            )
        now = time.time()
        buffer = io.BytesIO()
        written = 0
        with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
            for name in sorted({*self.files, *self.dirs}):
                local = self.files.get(name)
                if local is None:
                    entry = _entry(name, 0o777, self.dirs[name] or now)
                    entry.type = tarfile.DIRTYPE
                    archive.addfile(entry)
                    continue
                try:
                    with local.path.open("rb") as source:
                        info = os.fstat(source.fileno())
                        written += info.st_size
                        if written > max_bytes:
                            raise ArchiveError(
                                f"the files to copy into /workspace grew past the limit of"
                                f" {_human(max_bytes)} while being read ({name})"
                            )
                        mode = 0o777 if local.executable else 0o666
                        entry = _entry(name, mode, info.st_mtime)
                        entry.size = info.st_size
                        archive.addfile(entry, source)
                except OSError as exc:
                    raise ArchiveError(
                        f"cannot read {local.path} (for /workspace/{name}): {_reason(exc)}"
                    ) from exc
        return buffer.getvalue()


def _entry(name: str, mode: int, mtime: float) -> tarfile.TarInfo:
    entry = tarfile.TarInfo(name)
    entry.mode = mode
    entry.mtime = int(mtime)
    entry.uid = entry.gid = 0
    entry.uname = entry.gname = ""
    return entry


def _clean_member_name(name: str) -> str | None:
    """`a/./b/` -> `a/b`; None for a name that is empty, absolute or has `..`."""
    if name.startswith("/"):
        return None
    parts = [part for part in name.split("/") if part not in ("", ".")]
    if not parts or ".." in parts:
        return None
    return "/".join(parts)


def _kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a fifo"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    if stat.S_ISDIR(mode):
        return "a folder"
    return "of an unknown type"


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc)


# -- matching ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Pattern:
    """An artifact glob split into segments; `folders_only` when it ended with '/'."""

    text: str
    segments: tuple[str, ...]
    folders_only: bool

    @classmethod
    def parse(cls, pattern: str) -> _Pattern:
        if pattern.startswith("/") or ".." in pattern.split("/"):
            raise ArchiveError(
                f"artifact {pattern!r} must be a glob relative to /workspace, like 'out/*.csv'"
            )
        segments = tuple(part for part in pattern.split("/") if part not in ("", "."))
        if not segments:
            raise ArchiveError(f"artifact {pattern!r} names no path")
        return cls(pattern, segments, pattern.endswith("/"))

    def selects(self, parts: Sequence[str], is_dir: bool) -> bool:
        """True if the pattern matches the path or one of the folders above it."""
        for depth in range(1, len(parts) + 1):
            a_folder = depth < len(parts) or is_dir
            if self.folders_only and not a_folder:
                continue
            if _match(self.segments, tuple(parts[:depth])):
                return True
        return False


def _match(segments: tuple[str, ...], parts: tuple[str, ...]) -> bool:
    """Segment-wise glob match: `*`, `?`, `[..]` stay within one name, `**` spans any
    number of folders (none included)."""
    if not segments:
        return not parts
    head, rest = segments[0], segments[1:]
    if head == "**":
        return any(_match(rest, parts[skip:]) for skip in range(len(parts) + 1))
    return bool(parts) and fnmatch.fnmatchcase(parts[0], head) and _match(rest, parts[1:])


def matches_artifact_pattern(pattern: str, path: str) -> bool:
    """Whether the artifact `pattern` selects `path` (relative to /workspace).

    The rules `extract_artifacts` applies: the pattern is matched name by name (`*`, `?`
    and `[abc]` never cross a '/', and match names starting with a dot too); `**` matches
    any number of folders, none included; and a pattern that matches a folder takes
    everything below it (`out` and `out/` take `out/a/b.csv`; `out/*.csv` does not take
    `out/sub/x.csv`). A pattern ending with '/' only matches folders.
    """
    parts = [part for part in path.split("/") if part not in ("", ".")]
    return bool(parts) and _Pattern.parse(pattern).selects(parts, is_dir=path.endswith("/"))


def artifact_roots(patterns: Sequence[str]) -> list[str]:
    """The fewest paths under /workspace whose archives hold all `patterns` can match.

    Each pattern's leading names without glob characters (`out/*.csv` -> `out`,
    `report.txt` -> itself), minus any path under another; `""` stands for /workspace
    itself (`**/*.csv`). Fetching these instead of the whole workspace spares copying
    what no pattern wants (a root that does not exist in the container matches nothing).
    The archive of `/workspace/ROOT` names its members after ROOT's last name, so:

        chunks = <archive of "/workspace/" + root, or of "/workspace" for "">
        extract_artifacts(chunks, patterns, dest,
                          strip_prefix="" if root else "workspace",
                          add_prefix=posixpath.dirname(root))

    Each call cleans up only after itself: when several roots are fetched, remove `dest`
    if a later one fails.
    """
    roots: set[str] = set()
    for pattern in patterns:
        literal: list[str] = []
        for segment in _Pattern.parse(pattern).segments:
            if not _GLOB_CHARS.isdisjoint(segment):
                break
            literal.append(segment)
        roots.add("/".join(literal))
    return sorted(
        root
        for root in roots
        if not any(
            other != root and (other == "" or root.startswith(other + "/")) for other in roots
        )
    )


# -- out of the workspace ----------------------------------------------------------------


class _ChunkReader(io.RawIOBase):
    """A readable file over an iterator of byte chunks, holding one chunk at a time."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks: Iterator[bytes] = iter(chunks)
        self._pending = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer) -> int:
        while not self._pending:
            chunk = next(self._chunks, None)
            if chunk is None:
                return 0
            self._pending = memoryview(chunk).cast("B")
        target = memoryview(buffer).cast("B")
        size = min(len(target), len(self._pending))
        target[:size] = self._pending[:size]
        self._pending = self._pending[size:]
        return size

    def drain(self) -> None:
        """Read what is left (the archive's zero padding), so the connection is done."""
        self._pending = memoryview(b"")
        for _ in self._chunks:
            pass


def extract_artifacts(
    chunks: Iterable[bytes],
    patterns: Sequence[str],
    dest: Path,
    *,
    strip_prefix: str,
    add_prefix: str = "",
    max_total_bytes: int = DEFAULT_MAX_ARTIFACT_BYTES,
    max_files: int = DEFAULT_MAX_ARTIFACT_FILES,
) -> list[Artifact]:
    """Write the files of a tar stream that `patterns` select under `dest`; return them
    sorted by path, each with its size and sha256.

    `chunks` is the archive as the engine streams it (Docker's get_archive); it is read
    once, a block at a time, never held whole. A member's path under /workspace is its
    name without `strip_prefix` and with `add_prefix` in front: for an archive of
    /workspace, members are `workspace/...`, so `strip_prefix="workspace"`; for one of
    /workspace/out/sub, members are `sub/...`: `strip_prefix="", add_prefix="out"`.
    A file lands at `dest/<path under /workspace>`. `patterns` are globs relative to
    /workspace, matched as `matches_artifact_pattern` says; a pattern matching nothing is
    not an error here. Folders are not recorded, only the files in them (an empty folder
    is not copied). The executable bit is kept; ownership is the current user's.

    Refused with ArchiveError, naming the member and why, before anything of it is
    written: a name that is absolute, has `..` or lies outside `strip_prefix` (any
    member); among the selected members, links (symbolic or hard: they are not copied),
    devices, fifos and anything else that is not a regular file or folder; a name that is
    not UTF-8 or comes twice; a file that would take the total past `max_total_bytes` (its
    header's size is checked before its data is read); and more than `max_files` files.
    Files are written through folder descriptors with O_NOFOLLOW and renamed into place,
    so a symbolic link already in `dest` is never followed. On any error, everything this
    call wrote is removed again (a file it replaced is not brought back).
    """
    selectors = [_Pattern.parse(pattern) for pattern in patterns]
    strip = [part for part in strip_prefix.split("/") if part not in ("", ".")]
    prefix = [part for part in add_prefix.split("/") if part not in ("", ".")]
    reader = _ChunkReader(chunks)
    destination = _Destination(dest)
    artifacts: list[Artifact] = []
    seen: set[str] = set()
    total = 0
    try:
        try:
            with tarfile.open(fileobj=io.BufferedReader(reader, _COPY_BLOCK), mode="r|") as archive:
                while (member := archive.next()) is not None:
                    # A streamed TarFile keeps every header it read; drop them so that a
                    # workspace of millions of small files costs no memory. (`members` is
                    # a plain attribute of TarFile that typeshed does not declare.)
                    archive.members.clear()  # type: ignore[attr-defined]
                    parts = _workspace_parts(member.name, strip, prefix, strip_prefix)
                    if not parts or not any(s.selects(parts, member.isdir()) for s in selectors):
                        continue
                    path = "/".join(parts)
                    _check_member(member, path)
                    if member.isdir():
                        continue
                    if path in seen:
                        raise ArchiveError(
                            f"artifact '{path}' appears twice in the archive; refusing it"
                        )
                    seen.add(path)
                    if len(artifacts) >= max_files:
                        raise ArchiveError(
                            f"more than {max_files} files match the artifact patterns"
                            f" ({', '.join(repr(p) for p in patterns)}): the limit is"
                            f" {max_files}; narrow the patterns or raise the limit"
                        )
                    if total + member.size > max_total_bytes:
                        raise ArchiveError(
                            f"artifact '{path}' is {_human(member.size)}; with the"
                            f" {_human(total)} already copied that is over the limit of"
                            f" {_human(max_total_bytes)} for one task's artifacts"
                        )
                    source = archive.extractfile(member)
                    assert source is not None  # a regular file always has data
                    artifacts.append(
                        destination.write(parts, source, member.size, member.mode & _EXEC_BITS)
                    )
                    total += member.size
        except tarfile.TarError as exc:
            raise ArchiveError(f"the archive of /workspace cannot be read: {exc}") from exc
        reader.drain()
    except BaseException:
        destination.discard()
        raise
    finally:
        destination.close()
    return sorted(artifacts, key=lambda artifact: artifact.path)


def _workspace_parts(
    name: str, strip: list[str], prefix: list[str], strip_prefix: str
) -> list[str]:
    """The member's path under /workspace as names ([] for the archive's root itself)."""
    if name.startswith("/"):
        raise ArchiveError(f"archive member '{name}' has an absolute name; refusing it")
    raw = name.split("/")
    if ".." in raw:
        raise ArchiveError(f"archive member '{name}' has a '..' in its name; refusing it")
    parts = [part for part in raw if part not in ("", ".")]
    if parts[: len(strip)] != strip:
        raise ArchiveError(
            f"archive member '{name}' is not under '{strip_prefix}', the root of the archive;"
            " refusing it"
        )
    rest = parts[len(strip) :]
    return [*prefix, *rest] if rest else []


def _check_member(member: tarfile.TarInfo, path: str) -> None:
    """Refuse a selected member that is not a plain file or folder, or whose name cannot
    be stored."""
    if member.issym():
        raise ArchiveError(
            f"artifact '{path}' is a symbolic link (to '{member.linkname}'): links are not"
            " copied out of the workspace; copy the file itself"
        )
    if member.islnk():
        raise ArchiveError(
            f"artifact '{path}' is a hard link (to '{member.linkname}'): links are not"
            " copied out of the workspace; copy the file itself"
        )
    kind = (
        "a character device"
        if member.ischr()
        else "a block device"
        if member.isblk()
        else "a fifo"
        if member.isfifo()
        else None
    )
    if kind is None and not (member.isreg() or member.isdir()):
        kind = f"of tar type {member.type!r}"
    if kind is not None:
        raise ArchiveError(f"artifact '{path}' is {kind}: only regular files are copied")
    try:
        path.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ArchiveError(
            f"artifact {path!r} has a name that is not valid UTF-8; refusing it"
        ) from exc


def _write_all(fd: int, data: bytes, error: Callable[[OSError], ArchiveError]) -> None:
    view = memoryview(data)
    while view:
        try:
            done = os.write(fd, view)
        except OSError as exc:
            raise error(exc) from exc
        view = view[done:]


_KEPT_EVERY = 32
"""Of the folders on the way to the one last written to, a descriptor is kept open every
this many levels (and for that folder itself): at most a few dozen open at any depth."""


class _Destination:
    """Writes files below one folder without ever following a link inside it, and
    remembers what it created so that `discard` can take it back.

    The folder of the last file stays open, with a descriptor every `_KEPT_EVERY` levels
    on the way to it: an archive lists a folder's files together, so the next file needs
    no walk at all, and one in a folder nearby a walk from the nearest open level, not
    from the top (2,000 files 400 folders deep took 8 s when each walked from the top).
    """

    def __init__(self, dest: Path) -> None:
        self.root = Path(os.path.abspath(dest))
        self.fd: int | None = None  # opened with the first file: no file, no folder
        self.created_ancestors: list[Path] = []
        self.created_dirs: list[tuple[str, ...]] = []
        self.created_files: list[tuple[str, ...]] = []
        # The folder last written to, level by level from the root: (name, descriptor,
        # or None where it was closed to bound how many are open).
        self._stack: list[tuple[str, int | None]] = []
        self._folder: tuple[tuple[str, ...], Path] | None = None  # its parts and path
        self._open_parts: tuple[str, ...] | None = None  # the parts of the deepest level

    def _root_fd(self) -> int:
        if self.fd is None:
            self.created_ancestors = [
                folder
                for folder in reversed([self.root, *self.root.parents])
                if not folder.exists()
            ]
            try:
                self.root.mkdir(parents=True, exist_ok=True)
                # The destination itself is the caller's choice and may be a link; below
                # it, nothing is followed.
                self.fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            except OSError as exc:
                raise ArchiveError(
                    f"cannot create the artifacts folder {self.root}: {_reason(exc)}"
                ) from exc
        return self.fd

    def write(self, parts: Sequence[str], source: IO[bytes], size: int, exec_bits: int) -> Artifact:
        path = "/".join(parts)
        folder_fd = self._open_folder(tuple(parts[:-1]), path)  # kept open by this object
        temporary = f".runner-{secrets.token_hex(8)}.part"
        mode = 0o777 if exec_bits else 0o666  # less the umask
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            fd = os.open(temporary, flags, mode, dir_fd=folder_fd)
        except OSError as exc:
            raise self._error(path, exc) from exc
        self.created_files.append((*parts[:-1], temporary))
        digest = hashlib.sha256()
        written = 0
        try:
            while block := source.read(_COPY_BLOCK):
                digest.update(block)
                _write_all(fd, block, lambda exc: self._error(path, exc))
                written += len(block)
        finally:
            os.close(fd)
        if written != size:
            raise ArchiveError(f"artifact '{path}' ended after {written} of its {size} bytes")
        try:
            os.rename(temporary, parts[-1], src_dir_fd=folder_fd, dst_dir_fd=folder_fd)
        except OSError as exc:
            raise self._error(path, exc) from exc
        self.created_files[-1] = tuple(parts)
        return Artifact(
            path, written, digest.hexdigest(), self._folder_path(parts[:-1]) / parts[-1]
        )

    def _folder_path(self, parts: Sequence[str]) -> Path:
        """dest/parts as a Path, made once per folder (parsing 400 names per file is slow)."""
        key = tuple(parts)
        if self._folder is None or self._folder[0] != key:
            self._folder = (key, self.root.joinpath(*key))
        return self._folder[1]

    def _open_folder(self, parts: tuple[str, ...], path: str) -> int:
        """A descriptor of dest/parts, creating folders as needed, never through a link.
        It belongs to this object (closed by `close`), and stays valid until the next call."""
        stack = self._stack
        if parts == self._open_parts:  # the same folder as the last file
            fd = stack[-1][1] if stack else self._root_fd()
            assert fd is not None  # the deepest level is always open
            return fd
        common = 0
        while common < min(len(stack), len(parts)) and stack[common][0] == parts[common]:
            common += 1
        start = common  # walk again from the deepest level still open on the shared part
        while start and stack[start - 1][1] is None:
            start -= 1
        self._close_from(start)
        fd = stack[-1][1] if stack else self._root_fd()
        assert fd is not None  # the deepest kept level, or the root
        for depth in range(start, len(parts)):
            child = self._enter(fd, parts[depth], parts[: depth + 1], path)
            last = len(stack) - 1
            if stack and stack[last][1] is not None and (last + 1) % _KEPT_EVERY:
                os.close(fd)  # a level on the way: only every _KEPT_EVERY-th stays open
                stack[last] = (stack[last][0], None)
            stack.append((parts[depth], child))
            fd = child
        self._open_parts = parts
        return fd

    def _enter(self, fd: int, name: str, parts: Sequence[str], path: str) -> int:
        """A descriptor of folder `name` in the folder `fd`, made if it is not there;
        `parts` is its path under the destination (to remove it again on failure)."""
        flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            return os.open(name, flags, dir_fd=fd)
        except FileNotFoundError:
            pass
        except OSError as exc:  # a link (ELOOP) or a file (ENOTDIR) in the way
            raise self._error(path, exc) from exc
        try:
            os.mkdir(name, 0o777, dir_fd=fd)
            self.created_dirs.append(tuple(parts))
        except FileExistsError:
            pass
        except OSError as exc:
            raise self._error(path, exc) from exc
        try:
            return os.open(name, flags, dir_fd=fd)
        except OSError as exc:
            raise self._error(path, exc) from exc

    def _close_from(self, depth: int) -> None:
        """Close the kept descriptors of the levels from `depth` down, and forget them."""
        for _, fd in self._stack[depth:]:
            if fd is not None:
                os.close(fd)
        del self._stack[depth:]
        self._open_parts = None

    def _error(self, path: str, exc: OSError) -> ArchiveError:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            why = "a folder on its way is a symbolic link or a file in the destination"
        else:
            why = _reason(exc)
        return ArchiveError(f"cannot write artifact '{path}' under {self.root}: {why}")

    def discard(self) -> None:
        """Remove the files and folders this object created (best effort)."""
        for parts in reversed(self.created_files):
            with contextlib.suppress(OSError):
                os.unlink(self.root.joinpath(*parts))
        for parts in reversed(self.created_dirs):
            with contextlib.suppress(OSError):
                os.rmdir(self.root.joinpath(*parts))
        for folder in reversed(self.created_ancestors):
            try:
                folder.rmdir()
            except OSError:
                break

    def close(self) -> None:
        self._close_from(0)
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
