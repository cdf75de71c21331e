"""Which process runs an execution, and how the others can tell it is still alive.

The owner (host and its boot id, pid, a random token) renews a lease in the database every
few seconds from a heartbeat thread; the same round trip tells it whether `runner kill`
was asked from another process. The database's clock alone decides whether a lease
expired (`Store.active_leases` says so), so machines whose clocks disagree agree on it.
Another `runner` command that finds a lease expired, or the owner's pid gone on this same
machine (same host and same boot), may take it over with a compare-and-set on the token,
and recover the execution (`runner.recovery`).

An owner that cannot renew its lease within the lease time stops its run (the heartbeat
calls `on_stop`): by then another runner may take the execution over.
"""

from __future__ import annotations

import os
import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from runner.errors import StoreError
from runner.logs import get_logger
from runner.settings import heartbeat_seconds, lease_seconds
from runner.store.base import Store
from runner.store.records import Beat, Lease

__all__ = ["Beat", "Heartbeat", "Lease", "Owner", "boot_id", "is_expired"]

_BOOT_ID = Path("/proc/sys/kernel/random/boot_id")


def boot_id() -> str | None:
    """This boot of this machine (Linux: a uuid that changes at every boot); None where
    the system does not tell."""
    try:
        return _BOOT_ID.read_text(encoding="ascii").strip() or None
    except OSError:
        return None


@dataclass(frozen=True)
class Owner:
    """A process that holds (or takes) leases."""

    host: str
    pid: int
    token: str
    boot_id: str | None = None

    @classmethod
    def here(cls) -> Owner:
        return cls(
            host=socket.gethostname(), pid=os.getpid(), token=uuid.uuid4().hex, boot_id=boot_id()
        )

    def __str__(self) -> str:
        return f"pid {self.pid} on {self.host}"


def is_expired(lease: Lease, *, host: str, boot_id: str | None) -> bool:
    """Whether the holder of `lease` is gone: the database found no heartbeat within the
    lease time (`lease.expired`), or the holder ran on this very machine (same host name
    and same boot id; both unknown counts as the same) and its pid no longer exists.

    The boot id matters: containers started with `--uts=host` share the host's name but
    not its pids, and a machine that rebooted reuses pids."""
    if lease.expired or lease.heartbeat_at is None:
        return True
    return (
        lease.owner_host == host
        and lease.owner_boot_id == boot_id
        and lease.owner_pid is not None
        and not _pid_alive(lease.owner_pid)
    )


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


class Heartbeat:
    """A daemon thread renewing an execution's lease; calls `on_stop(reason)` once if a
    kill is requested, the lease is lost to another process, or it could not be renewed
    for nearly the lease time (then others may take it over: the run must stop first).
    Use as a context manager around the run."""

    def __init__(
        self,
        store: Store,
        execution_id: str,
        owner: Owner,
        on_stop: Callable[[str], None],
        *,
        on_lost: Callable[[str], None] | None = None,
        interval_s: float | None = None,
        lease_s: float | None = None,
    ) -> None:
        self._store = store
        self._execution_id = execution_id
        self._owner = owner
        self._on_stop = on_stop
        self._on_lost = on_lost
        self._interval = heartbeat_seconds() if interval_s is None else interval_s
        lease = lease_seconds() if lease_s is None else lease_s
        # Stop one beat before the lease runs out, by this process's monotonic clock
        # counted from before the last renewal that worked (the database stamped it later).
        self._stop_after = max(lease - self._interval, self._interval)
        self._renewed_at = time.monotonic()  # the lease was taken just before the run
        self._stopped = False
        self._stop_lock = threading.Lock()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="heartbeat", daemon=True)
        self._watchdog = threading.Thread(
            target=self._watch, name="heartbeat-watchdog", daemon=True
        )
        self._log = get_logger(execution_id=execution_id)

    def __enter__(self) -> Heartbeat:
        self._renewed_at = time.monotonic()
        self._thread.start()
        self._watchdog.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._done.set()
        self._thread.join(timeout=5)
        self._watchdog.join(timeout=5)

    def _stop(self, reason: str, *, lost: bool = False) -> None:
        """Stop the run once; when the lease is lost, `on_lost` first (it fences the
        run's store: from then on, nothing the run writes reaches the database)."""
        with self._stop_lock:
            if self._stopped:
                return
            self._stopped = True
        if lost and self._on_lost is not None:
            self._on_lost(reason)
        self._on_stop(reason)

    def _loop(self) -> None:
        while not self._done.wait(self._interval):
            sent = time.monotonic()
            try:
                beat = self._store.heartbeat(self._execution_id, self._owner.token)
            except StoreError as exc:
                # A missed beat is not fatal until the lease runs out: the watchdog
                # stops the run then.
                self._log.warning("heartbeat_failed", error=str(exc))
                continue
            self._renewed_at = sent
            if beat is Beat.KEPT or self._stopped:
                continue
            if beat is Beat.KILL:
                self._log.warning("kill_requested")
                self._stop("killed by `runner kill`")
            else:
                self._log.error("lease_lost")
                self._stop("another runner took this execution over (its lease expired)", lost=True)

    def _watch(self) -> None:
        """Stop the run when the lease could not be renewed for `_stop_after` seconds,
        even while a renewal hangs on an unanswering database."""
        while not self._stopped:
            left = self._renewed_at + self._stop_after - time.monotonic()
            if left > 0:
                if self._done.wait(min(left, self._interval)):
                    return
                continue
            silent_s = time.monotonic() - self._renewed_at
            self._log.error("lease_not_renewed", silent_s=round(silent_s, 1))
            self._stop(
                f"could not renew its lease for {silent_s:.0f} s (the database did not"
                " answer): stopped before another runner may take the execution over",
                lost=True,
            )
            return
