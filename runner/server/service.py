"""The long-lived parts of one `runner serve`, and how they start and stop.

    service = Service(store, backend, flows_dir=Path("flows"), workers=4)
    service.start()            # load the flows folder, start watching it and firing triggers
    ...                        # the HTTP app (runner.server.app) serves requests meanwhile
    service.drain(grace_s=30)  # stop triggers, refuse new work, let executions finish,
                               # then kill what still runs (recorded KILLED)
    service.close()

Everything a route does goes through `runner.api` with the store, worker and flows held
here; this module owns only threads and lifecycle. Background threads: the flows folder
watcher (every `FLOWS_POLL_SECONDS`) and the trigger loop (`runner.server.triggers`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from runner import api
from runner.errors import RunnerError, UnavailableError
from runner.logs import module_logger
from runner.server.catalog import Changes, FlowCatalog
from runner.server.triggers import TriggerLoop
from runner.settings import DEFAULT_SERVE_WORKERS, FLOWS_POLL_SECONDS, TRIGGER_TICK_SECONDS

if TYPE_CHECKING:
    from runner.backends.base import Backend
    from runner.store import Store

__all__ = ["Clock", "Service", "utcnow"]

log = module_logger("runner")

Clock = Callable[[], datetime]
"""Now, timezone-aware: tests pass a fake one."""


def utcnow() -> datetime:
    return datetime.now(UTC)


class Service:
    """What one server holds: the store, the backend, a worker running executions, the
    flows of its folder, and the trigger loop."""

    def __init__(
        self,
        store: Store,
        backend: Backend,
        *,
        flows_dir: Path,
        workers: int = DEFAULT_SERVE_WORKERS,
        clock: Clock = utcnow,
        poll_s: float = FLOWS_POLL_SECONDS,
        tick_s: float = TRIGGER_TICK_SECONDS,
    ) -> None:
        self.store = store
        self.backend = backend
        self.clock = clock
        self.worker = api.Worker(store, backend=backend, max_running=workers, keep_results=False)
        self.catalog = FlowCatalog(flows_dir)
        self._stopping = threading.Event()
        self.triggers = TriggerLoop(
            store, self.worker, self.catalog.flows, clock, self._stopping, tick_s=tick_s
        )
        self._poll_s = poll_s
        self._drained = threading.Event()
        self._threads: list[threading.Thread] = []
        self._refresh_lock = threading.Lock()

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self, *, background: bool = True) -> None:
        """Load the flows folder, then (with `background`) watch it and fire triggers."""
        self.refresh_flows()
        if not background:
            return
        for name, target in (("flows-watcher", self._watch), ("triggers", self.triggers.run)):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def refuse_if_stopping(self) -> None:
        """Raise UnavailableError (503) once the server drains: no new work is taken."""
        if self._stopping.is_set():
            raise UnavailableError("the server is shutting down: it takes no new work")

    @property
    def drained(self) -> bool:
        """Whether draining is over: no execution runs here any more."""
        return self._drained.is_set()

    def wait_stopping(self, seconds: float) -> bool:
        """Sleep up to `seconds`, woken when the server starts draining; whether it is."""
        return self._stopping.wait(seconds)

    def drain(self, grace_s: float) -> None:
        """Stop firing triggers and taking work; let running executions go on for
        `grace_s` seconds, then kill those still running (recorded KILLED, containers and
        workspaces removed) and wait for them to end."""
        if self._stopping.is_set():
            return
        running = self.worker.running()
        log.info("serve_draining", grace_s=grace_s, running=len(running))
        self._stopping.set()
        for thread in self._threads:
            thread.join(timeout=10)
        started = time.monotonic()
        killed = self.worker.shutdown(
            grace_s=grace_s,
            reason=f"killed: the server shut down (its grace period of {grace_s:g} s was over)",
        )
        self._drained.set()
        log.info("serve_drained", seconds=round(time.monotonic() - started, 3), killed=len(killed))

    def hurry(self) -> None:
        """Kill every execution running here now (a second signal while draining)."""
        for execution_id in self.worker.running():
            self.worker.kill(execution_id, "killed: the server running it was stopped")

    def close(self) -> None:
        self.drain(grace_s=0)
        self.backend.close()
        self.store.close()

    # -- the flows folder ------------------------------------------------------------------

    def refresh_flows(self) -> Changes:
        """Read the folder again; record each new revision; log what changed."""
        with self._refresh_lock:
            changes = self.catalog.scan()
            for loaded in changes.loaded:
                try:
                    api.record_flow_revision(self.store, loaded, at=self.clock())
                except RunnerError as exc:
                    log.warning(
                        "flow_revision_not_recorded", flow_id=loaded.flow.full_id, error=str(exc)
                    )
                log.info(
                    "flow_loaded",
                    flow_id=loaded.flow.full_id,
                    revision=loaded.revision,
                    file=loaded.file,
                )
            for full_id in changes.removed:
                log.info("flow_removed", flow_id=full_id)
            for invalid in changes.invalid:
                log.warning(
                    "flow_invalid",
                    file=invalid.file,
                    problems=[str(problem) for problem in invalid.problems],
                )
            return changes

    def _watch(self) -> None:
        while not self._stopping.wait(self._poll_s):
            try:
                self.refresh_flows()
            except Exception as exc:  # the watcher must outlive a bad moment on disk
                log.exception("flows_scan_failed", error=str(exc))
