"""The flows folder of a server: every flow file under it, loaded, and kept up to date.

    catalog = FlowCatalog(Path("flows"))
    changes = catalog.scan()          # read what is new or changed since the last scan
    catalog.flows()                   # the valid flows, by namespace and id
    catalog.get("team", "load")       # one of them (NotFoundError if unknown)
    catalog.invalid()                 # files that cannot be used, with file:line problems

A scan looks at every `*.yml` and `*.yaml` file under the folder (hidden folders and files
left out) and reads again only those whose size, modification time or inode changed, so
polling every second costs one `stat` per file. A file that cannot be used is reported with
the same file:line problems as `runner validate`; the others go on being served. Two files
declaring the same flow: the first in path order keeps it, the second is reported.

Nothing here touches the database: the server records the revisions a scan returns.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from runner.errors import FlowError, NotFoundError, Problem, RunnerError
from runner.loader import LoadedFlow, load_flow
from runner.messages import did_you_mean

__all__ = ["Changes", "FlowCatalog", "InvalidFile"]

_SUFFIXES = (".yml", ".yaml")


@dataclass(frozen=True)
class InvalidFile:
    """A file of the folder that is not a usable flow, and every reason why."""

    file: str
    problems: tuple[Problem, ...]


@dataclass(frozen=True)
class Changes:
    """What one scan found: flows that are new or whose file changed (with their new
    revision), flows whose file is gone or no longer valid, files newly invalid."""

    loaded: tuple[LoadedFlow, ...] = ()
    removed: tuple[str, ...] = ()  # full ids (`namespace.id`)
    invalid: tuple[InvalidFile, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.loaded or self.removed or self.invalid)


@dataclass
class _Entry:
    fingerprint: tuple[int, int, int]
    loaded: LoadedFlow | None = None
    invalid: InvalidFile | None = None


class FlowCatalog:
    """The flows of one folder; `scan` is safe to call from any thread."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._lock = threading.Lock()
        self._files: dict[Path, _Entry] = {}
        self._flows: dict[tuple[str, str], LoadedFlow] = {}
        self._owner: dict[tuple[str, str], Path] = {}  # which file holds each flow
        self._duplicates: dict[Path, InvalidFile] = {}

    # -- reading the folder --------------------------------------------------------------

    def scan(self) -> Changes:
        """Read the files that are new or changed since the last scan; what changed."""
        found = dict(self._walk())
        with self._lock:
            before = dict(self._flows)
            before_invalid = {f.file: f for f in self._invalid()}
            for path in list(self._files):
                if path not in found:
                    del self._files[path]
            for path, fingerprint in found.items():
                entry = self._files.get(path)
                if entry is not None and entry.fingerprint == fingerprint:
                    continue
                self._files[path] = self._read(path, fingerprint)
            self._index()
            loaded = tuple(
                flow
                for key, flow in sorted(self._flows.items())
                if key not in before or before[key].revision != flow.revision
            )
            removed = tuple(
                f"{namespace}.{flow_id}"
                for namespace, flow_id in sorted(before)
                if (namespace, flow_id) not in self._flows
            )
            invalid = tuple(f for f in self._invalid() if before_invalid.get(f.file) != f)
        return Changes(loaded, removed, invalid)

    def _walk(self) -> Iterator[tuple[Path, tuple[int, int, int]]]:
        if not self.folder.is_dir():
            return
        for root, dirs, files in os.walk(self.folder):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for name in sorted(files):
                if name.startswith(".") or not name.endswith(_SUFFIXES):
                    continue
                path = Path(root) / name
                try:
                    info = path.stat()
                except OSError:  # removed between the listing and now
                    continue
                yield path, (info.st_mtime_ns, info.st_size, info.st_ino)

    def _read(self, path: Path, fingerprint: tuple[int, int, int]) -> _Entry:
        try:
            return _Entry(fingerprint, loaded=load_flow(path))
        except FlowError as exc:
            return _Entry(fingerprint, invalid=InvalidFile(str(path), exc.problems))
        except RunnerError as exc:
            problem = Problem(str(path), None, None, "", str(exc))
            return _Entry(fingerprint, invalid=InvalidFile(str(path), (problem,)))

    def _index(self) -> None:
        """Rebuild the flows by id from the files, first file (in path order) first."""
        flows: dict[tuple[str, str], LoadedFlow] = {}
        owner: dict[tuple[str, str], Path] = {}
        duplicates: dict[Path, InvalidFile] = {}
        for path in sorted(self._files):
            loaded = self._files[path].loaded
            if loaded is None:
                continue
            key = (loaded.flow.namespace, loaded.flow.id)
            if key in flows:
                message = (
                    f"flow {loaded.flow.full_id} is already defined in {owner[key]};"
                    " this file is ignored until one of them changes its id or namespace"
                )
                problem = Problem(str(path), loaded.line_of(("id",)), None, "id", message)
                duplicates[path] = InvalidFile(str(path), (problem,))
                continue
            flows[key] = loaded
            owner[key] = path
        self._flows, self._owner, self._duplicates = flows, owner, duplicates

    # -- what a server answers ---------------------------------------------------------------

    def flows(self) -> list[LoadedFlow]:
        """Every valid flow, by namespace and id."""
        with self._lock:
            return [self._flows[key] for key in sorted(self._flows)]

    def get(self, namespace: str, flow_id: str) -> LoadedFlow:
        """The flow `namespace.flow_id`; NotFoundError naming the known ones if none."""
        with self._lock:
            found = self._flows.get((namespace, flow_id))
            known = [f"{ns}.{fid}" for ns, fid in sorted(self._flows)]
        if found is None:
            full_id = f"{namespace}.{flow_id}"
            hint = did_you_mean(full_id, known)
            raise NotFoundError(f"no flow {full_id} in {self.folder}{hint}")
        return found

    def invalid(self) -> list[InvalidFile]:
        """Every file that cannot be served, in path order, with its problems."""
        with self._lock:
            return self._invalid()

    def _invalid(self) -> list[InvalidFile]:
        invalid = [e.invalid for e in self._files.values() if e.invalid is not None]
        invalid += self._duplicates.values()
        return sorted(invalid, key=lambda f: f.file)

    def file_of(self, namespace: str, flow_id: str) -> Path | None:
        with self._lock:
            return self._owner.get((namespace, flow_id))
