"""The trigger loop of a server: every tick, fire the schedules and flow triggers that are
due (`runner.api.fire_due`), and about once a second end the pauses that timed out
(`runner.api.expire_pauses`). Both go through the worker, so the executions they start
run in the background and obey `--workers`."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING

from runner import api
from runner.logs import module_logger

if TYPE_CHECKING:
    from runner.loader import LoadedFlow
    from runner.store import Store

__all__ = ["TriggerLoop"]

PAUSE_CHECK_S = 1.0

log = module_logger("runner")


class TriggerLoop:
    def __init__(
        self,
        store: Store,
        worker: api.Worker,
        flows: Callable[[], list[LoadedFlow]],
        clock: Callable[[], datetime],
        stopping: threading.Event,
        *,
        tick_s: float,
    ) -> None:
        self.store = store
        self.worker = worker
        self.flows = flows
        self.clock = clock
        self.stopping = stopping
        self.tick_s = tick_s
        self._seen: set[str] = set()  # upstream executions already handled (flow triggers)
        self._pauses_checked = 0.0

    def run(self) -> None:
        """Tick until the server drains."""
        while True:
            try:
                self.tick()
            except Exception as exc:  # a bad tick must not end the loop
                log.exception("trigger_tick_failed", error=str(exc))
            if self.stopping.wait(self.tick_s):
                return

    def tick(self) -> list[str]:
        """Fire what is due now; the ids of the executions started."""
        if self.stopping.is_set():
            return []
        now = self.clock()
        started = api.fire_due(self.store, self.worker, self.flows(), now=now, seen=self._seen)
        if len(self._seen) > 100_000:
            self._seen.clear()
        if time.monotonic() - self._pauses_checked >= PAUSE_CHECK_S:
            self._pauses_checked = time.monotonic()
            started += api.expire_pauses(self.store, self.worker, now=now)
        return started
