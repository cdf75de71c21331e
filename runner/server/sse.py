"""An execution's log lines as Server-Sent Events, with no lost tail.

    event: line    id: <line id>    data: {"id", "task_id", "stream", "time", "line", ...}
    event: state                    data: {"state": "RUNNING"}    (when it changes)
    event: end     id: <last id>    data: {"state": "SUCCESS"}    (once, last)

Every line is one `line` event whose id is the line's id, so a client that reconnects
with `Last-Event-ID` resumes right after the last line it got (the browser's EventSource
does this by itself). `state` events carry no id: they do not move that cursor.

`end` comes only once the execution has ended and every line was sent: each round reads
the state first, then the lines after the cursor; a state that was final before a read
that came back short means nothing more can come (the scheduler stores every line before
it records the final state). Kestra closes its stream 2 s after the end and loses lines
written late (kestra-io/kestra#7226); this does not guess.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

import anyio
from fastapi.sse import format_sse_event

from runner import api
from runner.execution import ExecutionState
from runner.server import views
from runner.server.routes.deps import in_thread
from runner.server.service import Service

__all__ = ["BATCH", "log_events"]

BATCH = 1000
"""Lines read per round; a full batch is followed by the next one at once."""
POLL_S = 0.25
"""How long a round waits when nothing new came."""
PING_S = 15.0
"""A comment line this often keeps proxies from closing a quiet stream."""


def _event(event: str, data: Any, event_id: int | None = None) -> bytes:
    return format_sse_event(
        data_str=json.dumps(data),
        event=event,
        id=str(event_id) if event_id is not None else None,
    )


async def log_events(
    service: Service, execution_id: str, *, task_id: str | None, after: int | None
) -> AsyncIterator[bytes]:
    """The events of one stream (see the module doc); `after` is the last line id the
    client has. Ends after `end`, or without it once the server has drained (the client
    reconnects, with Last-Event-ID, to a server that runs)."""
    store = service.store
    cursor = after
    shown: ExecutionState | None = None
    quiet_since = time.monotonic()
    while True:
        drained = service.drained
        state = await in_thread(api.get_execution_state, store, execution_id)
        lines = await in_thread(
            api.get_logs, store, execution_id, task_id=task_id, after=cursor, limit=BATCH
        )
        for line in lines:
            yield _event("line", views.log_line(line), line.id)
            cursor = line.id
        if state is not shown:
            yield _event("state", {"state": state.value})
            shown = state
        if len(lines) == BATCH:
            continue
        if state.is_final:
            yield _event("end", {"state": state.value}, cursor)
            return
        if drained:
            return
        if lines:
            quiet_since = time.monotonic()
        elif time.monotonic() - quiet_since > PING_S:
            yield b": ping\n\n"
            quiet_since = time.monotonic()
        await anyio.sleep(POLL_S)
