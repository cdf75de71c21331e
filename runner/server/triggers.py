"""The trigger loop of a server: every tick, fire the schedules and flow triggers that are
due (`runner.api.fire_due`), and about once a second end the pauses that timed out
(`runner.api.expire_pauses`). Both go through the worker, so the executions they start
run in the background and obey `--workers`."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from runner import api
from runner.logs import get_logger

if TYPE_CHECKING:
    from runner.server.service import Service

__all__ = ["TriggerLoop"]

PAUSE_CHECK_S = 1.0

log = get_logger()


class TriggerLoop:
    def __init__(self, service: Service, *, tick_s: float) -> None:
        self.service = service
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
            if self.service.wait_stopping(self.tick_s):
                return

    def tick(self) -> list[str]:
        """Fire what is due now; the ids of the executions started."""
        service = self.service
        if service.stopping:
            return []
        now = service.clock()
        started = api.fire_due(
            service.store, service.worker, service.catalog.flows(), now=now, seen=self._seen
        )
        if len(self._seen) > 100_000:
            self._seen.clear()
        if time.monotonic() - self._pauses_checked >= PAUSE_CHECK_S:
            self._pauses_checked = time.monotonic()
            started += api.expire_pauses(service.store, service.worker, now=now)
        return started
