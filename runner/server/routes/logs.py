"""Logs: an execution's stored lines after a cursor, and the live stream (SSE)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Query
from fastapi.responses import JSONResponse, Response
from fastapi.sse import EventSourceResponse

from runner import api
from runner.server import schemas, views
from runner.server.routes.deps import ServiceDep
from runner.server.sse import log_events

router = APIRouter(tags=["logs"])

MAX_LINES = 10_000


@router.get(
    "/executions/{execution_id}/logs",
    response_model=schemas.LogPage,
    responses={404: {"model": schemas.ErrorBody}},
)
def get_logs(
    service: ServiceDep,
    execution_id: str,
    task: Annotated[str | None, Query(description="Only this task run's lines.")] = None,
    after: Annotated[int | None, Query(ge=0, description="The last line id you have.")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LINES)] = 1000,
    tail: Annotated[
        int | None,
        Query(ge=1, le=MAX_LINES, description="Only the last `tail` lines (`limit` unused)."),
    ] = None,
) -> JSONResponse:
    """The stored lines of an execution in order, those after the line id `after`, at
    most `limit` (or the last `tail` of them); `next` is the id to pass as `after` for
    what follows (the same as `after` when nothing came)."""
    lines = api.get_logs(
        service.store,
        execution_id,
        task_id=task,
        after=after,
        limit=None if tail is not None else limit,
        tail=tail,
    )
    body: dict[str, Any] = {
        "lines": [views.log_line(line) for line in lines],
        "next": lines[-1].id if lines else after,
    }
    # Written directly: a page of 1,000 lines is on the hot path of every log viewer.
    return JSONResponse(body)


@router.get(
    "/executions/{execution_id}/logs/stream",
    # The stream is a Response built here (after the 404 check), not a generator route.
    response_class=Response,
    responses={
        200: {
            "content": {"text/event-stream": {"schema": {"type": "string"}}},
            "description": "`line` events (id: the line's id), `state` events, one `end`.",
        },
        404: {"model": schemas.ErrorBody},
    },
)
def stream_logs(
    service: ServiceDep,
    execution_id: str,
    task: Annotated[str | None, Query(description="Only this task run's lines.")] = None,
    after: Annotated[int | None, Query(ge=0, description="The last line id you have.")] = None,
    last_event_id: Annotated[
        str | None, Header(description="Sent by EventSource on reconnection: resume after it.")
    ] = None,
) -> EventSourceResponse:
    """The execution's lines as Server-Sent Events: `line` events (id = the line's id),
    `state` events when the state changes, and one `end` event once it has ended and
    every line was sent. Reconnect with `Last-Event-ID` to resume without a gap."""
    record = api.get_execution(service.store, execution_id)  # 404 before the stream starts
    cursor = after
    if last_event_id is not None and last_event_id.strip().isdigit():
        cursor = int(last_event_id.strip())
    events = log_events(service, record.id, task_id=task, after=cursor)
    return EventSourceResponse(
        events, headers={"X-Accel-Buffering": "no", "Cache-Control": "no-cache"}
    )
