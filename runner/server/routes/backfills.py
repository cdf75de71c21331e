"""Backfills: one execution per time of a flow's schedule in a range, oldest first, none
for a time that already ran."""

from __future__ import annotations

from fastapi import APIRouter

from runner import api
from runner.server import schemas
from runner.server.routes.deps import ServiceDep, in_thread

router = APIRouter(tags=["backfills"])


@router.post(
    "/backfills",
    status_code=201,
    response_model=schemas.BackfillOut,
    responses={
        400: {"model": schemas.ErrorBody, "description": "No such schedule, or a bad range."},
        404: {"model": schemas.ErrorBody},
    },
)
async def create_backfill(request: schemas.BackfillIn, service: ServiceDep) -> schemas.BackfillOut:
    """Start (in the background, within the flow's concurrency) one execution per
    scheduled time in [start, end), each with `trigger.date` at its time; times that
    already ran are listed with the execution that ran them. `dry_run` only lists."""
    if not request.dry_run:
        service.refuse_if_stopping()
    loaded = service.catalog.get(request.namespace, request.flow_id)
    done = await in_thread(
        api.backfill,
        service.store,
        loaded,
        start=request.start,
        end=request.end,
        trigger=request.trigger,
        worker=service.worker,
        dry_run=request.dry_run,
    )
    return schemas.BackfillOut(
        namespace=request.namespace,
        flow_id=request.flow_id,
        trigger=done.trigger_id,
        dry_run=request.dry_run,
        times=[
            schemas.BackfillTime(
                scheduled_at=t.scheduled_at, execution_id=t.execution_id, already_run=t.already_run
            )
            for t in done.times
        ],
    )
