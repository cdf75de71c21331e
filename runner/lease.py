"""Which process runs an execution, and how the others can tell it is still alive.

The owner (host, pid, a random token) renews a lease in the database every few seconds
from a heartbeat thread; the same round trip tells it whether `runner kill` was asked
from another process. Another `runner` command that finds a lease expired (no heartbeat
for `lease_seconds()`, or the owner's pid gone on this same host) may take it over with
a compare-and-set on the token, and recover the execution (`runner.recovery`).
"""

from __future__ import annotations

import os
import socket
import sys
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import Enum
from types import TracebackType
from typing import Protocol

from runner.errors import StoreError
from runner.logs import get_logger
from runner.settings import heartbeat_seconds


@dataclass(frozen=True)
class Owner:
    """A process that holds (or takes) leases."""

    host: str
    pid: int
    token: str

    @classmethod
    def here(cls) -> Owner:
        return cls(host=socket.gethostname(), pid=os.getpid(), token=uuid.uuid4().hex)

    def __str__(self) -> str:
        return f"pid {self.pid} on {self.host}"


@dataclass(frozen=True)
class Lease:
    """An execution that is not final, with who holds it, as the database says."""

    execution_id: str
    state: str
    owner_host: str | None
    owner_pid: int | None
    token: str | None
    heartbeat_at: datetime | None
    kill_requested: bool = False

    @property
    def holder(self) -> str:
        if self.owner_pid is None:
            return "an older runner"
        return f"pid {self.owner_pid} on {self.owner_host}"


def is_expired(lease: Lease, now: datetime, *, host: str, lease_s: float) -> bool:
    """Whether the holder of `lease` is gone: its pid no longer exists on this host, or it
    has not renewed the lease for `lease_s` seconds (a lease without any heartbeat, from
    a runner older than leases, is expired)."""
    if lease.heartbeat_at is None:
        return True
    if lease.owner_host == host and lease.owner_pid is not None and not _pid_alive(lease.owner_pid):
        return True
    return now - lease.heartbeat_at > timedelta(seconds=lease_s)


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    if sys.platform == "win32":
        return _windows_pid_alive(pid)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: it exists
        return True
    except OSError:
        return True
    # A zombie (killed, not yet reaped by its parent) is dead for our purposes.
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as stat:
            return stat.read().rsplit(")", 1)[-1].split()[0] != "Z"
    except OSError:
        return True


def _windows_pid_alive(pid: int) -> bool:
    # Never os.kill(pid, 0) on Windows: it terminates the process.
    import ctypes

    query_limited_information, still_active = 0x1000, 259
    kernel32 = ctypes.windll.kernel32  # type: ignore[attr-defined,unused-ignore]
    handle = kernel32.OpenProcess(query_limited_information, False, pid)
    if not handle:
        # no such process, or one we may not query (then it exists)
        return bool(kernel32.GetLastError() == 5)  # ERROR_ACCESS_DENIED
    try:
        code = ctypes.c_ulong()
        if not kernel32.GetExitCodeProcess(handle, ctypes.byref(code)):
            return True
        return code.value == still_active
    finally:
        kernel32.CloseHandle(handle)


class Beat(Enum):
    KEPT = "kept"
    KILL = "kill"  # `runner kill` asked for this execution
    LOST = "lost"  # another process took the lease over: this one must stop


class HeartbeatStore(Protocol):
    """What the heartbeat needs of the store (`runner.store.Store` has it)."""

    def heartbeat(self, execution_id: str, token: str) -> Beat: ...


class Heartbeat:
    """A daemon thread renewing an execution's lease; calls `on_stop(reason)` once if a
    kill is requested or the lease is lost. Use as a context manager around the run."""

    def __init__(
        self,
        store: HeartbeatStore,
        execution_id: str,
        owner: Owner,
        on_stop: Callable[[str], None],
        *,
        interval_s: float | None = None,
    ) -> None:
        self._store = store
        self._execution_id = execution_id
        self._owner = owner
        self._on_stop = on_stop
        self._interval = heartbeat_seconds() if interval_s is None else interval_s
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="heartbeat", daemon=True)
        self._log = get_logger(execution_id=execution_id)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._done.set()
        self._thread.join(timeout=5)

    def _loop(self) -> None:
        stopped = False
        while not self._done.wait(self._interval):
            try:
                beat = self._store.heartbeat(self._execution_id, self._owner.token)
            except StoreError as exc:
                # The store retries on its own; a missed beat is not fatal until the lease
                # runs out, and the run itself reports a database that stays down.
                self._log.warning("heartbeat_failed", error=str(exc))
                continue
            if beat is Beat.KEPT or stopped:
                continue
            stopped = True
            if beat is Beat.KILL:
                self._log.warning("kill_requested")
                self._on_stop("killed by `runner kill`")
            else:
                self._log.error("lease_lost")
                self._on_stop("another runner took this execution over (its lease expired)")
