"""Flows: the files of the flows folder, their triggers and next times, validation of a
flow file, and pausing a flow's triggers."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request

from runner import api
from runner.errors import UsageError
from runner.server import schemas, views
from runner.server.routes.deps import ServiceDep, in_thread
from runner.server.service import Service
from runner.settings import max_flow_bytes

router = APIRouter(tags=["flows"])


@router.get("/flows", response_model=schemas.FlowList)
def list_flows(service: ServiceDep) -> schemas.FlowList:
    """Every flow of the folder (by namespace and id) with its triggers, their next times
    and whether it is paused; and the files that cannot be used, with their problems."""
    now = service.clock()
    loaded = service.catalog.flows()
    states = api.flow_states(service.store)
    last = api.latest_executions(service.store, [(f.flow.namespace, f.flow.id) for f in loaded])
    return schemas.FlowList(
        flows=[
            views.flow_summary(
                f,
                states.get((f.flow.namespace, f.flow.id)),
                now,
                last.get((f.flow.namespace, f.flow.id)),
            )
            for f in loaded
        ],
        invalid=[views.invalid_file(found) for found in service.catalog.invalid()],
    )


@router.get("/flows/{namespace}/{flow_id}", response_model=schemas.FlowDetail)
def get_flow(namespace: str, flow_id: str, service: ServiceDep) -> schemas.FlowDetail:
    """One flow: its source, inputs (for a run form), task graph, triggers with their
    next times, and whether it is paused."""
    loaded = service.catalog.get(namespace, flow_id)
    state = api.flow_states(service.store, namespace=namespace, flow_id=flow_id)
    last = api.latest_executions(service.store, [(namespace, flow_id)])
    return views.flow_detail(
        loaded,
        state.get((namespace, flow_id)),
        service.clock(),
        last.get((namespace, flow_id)),
    )


@router.post(
    "/flows/validate",
    response_model=schemas.Validated,
    responses={422: {"model": schemas.ErrorBody, "description": "Every problem, file:line."}},
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/yaml": {"schema": {"type": "string"}}},
        }
    },
)
async def validate_flow(
    service: ServiceDep,
    request: Request,
    name: Annotated[
        str, Query(description="The file name problems are reported under (`name:line`).")
    ] = "flow.yml",
) -> schemas.Validated:
    """Check a flow file (the YAML text as the body) as `runner validate` does: 422 with
    every problem, each naming its line, as the CLI prints them."""
    body = await request.body()
    limit = max_flow_bytes()  # the limit `runner validate` reads files with
    if len(body) > limit:
        raise UsageError(f"a flow file is at most {limit} bytes; this one has {len(body)}")
    if "/" in name or "\\" in name or name.startswith("."):
        raise UsageError(f"name {name!r} must be a plain file name, like 'flow.yml'")
    loaded = await in_thread(api.validate_flow_text, body, service.catalog.folder / name)
    return schemas.Validated(
        namespace=loaded.flow.namespace, id=loaded.flow.id, tasks=len(loaded.flow.tasks)
    )


@router.post("/flows/{namespace}/{flow_id}/pause", response_model=schemas.FlowSummary)
def pause_flow(namespace: str, flow_id: str, service: ServiceDep) -> schemas.FlowSummary:
    """Stop the flow's triggers from firing (runs started by hand still run)."""
    return _set_paused(service, namespace, flow_id, paused=True)


@router.post("/flows/{namespace}/{flow_id}/unpause", response_model=schemas.FlowSummary)
def unpause_flow(namespace: str, flow_id: str, service: ServiceDep) -> schemas.FlowSummary:
    """Let the flow's triggers fire again; the times its schedules missed meanwhile follow
    each schedule's `recover_missed`."""
    return _set_paused(service, namespace, flow_id, paused=False)


def _set_paused(
    service: Service, namespace: str, flow_id: str, *, paused: bool
) -> schemas.FlowSummary:
    loaded = service.catalog.get(namespace, flow_id)
    now = service.clock()
    if paused:
        api.pause_flow(service.store, namespace, flow_id, at=now)
    else:
        api.unpause_flow(service.store, namespace, flow_id, at=now)
    state = api.flow_states(service.store, namespace=namespace, flow_id=flow_id)
    return views.flow_summary(loaded, state.get((namespace, flow_id)), now)
