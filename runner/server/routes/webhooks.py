"""Webhooks: `POST /webhooks/{namespace}/{flow_id}/{key}` starts the flow (no token: the
key is the secret). An unknown namespace, flow or key is the same 404, so that a caller
cannot find out which flows exist."""

from __future__ import annotations

import contextlib
import json
from typing import Any

from fastapi import APIRouter, Request

from runner import api
from runner.errors import NotFoundError
from runner.server import schemas
from runner.server.routes.deps import ServiceDep, in_thread
from runner.server.routes.executions import execution_url

router = APIRouter(tags=["webhooks"])

MAX_BODY = 1024 * 1024
"""The largest webhook body kept for `trigger.body`."""

# Headers a template may see as `trigger.headers`; credentials stay out of the store.
_HIDDEN_HEADERS = frozenset({"authorization", "cookie", "proxy-authorization"})


@router.post(
    "/webhooks/{namespace}/{flow_id}/{key}",
    status_code=201,
    response_model=schemas.ExecutionRef,
    responses={
        404: {"model": schemas.ErrorBody, "description": "No such flow or key."},
        409: {"model": schemas.ErrorBody, "description": "The flow is paused."},
        422: {"model": schemas.ErrorBody, "description": "Inputs that do not fit."},
    },
)
async def call_webhook(
    namespace: str, flow_id: str, key: str, request: Request, service: ServiceDep
) -> schemas.ExecutionRef:
    """Start the flow for its webhook trigger with this key. The body is `trigger.body`
    for the trigger's `inputs` templates (parsed if it is JSON, else text) and the
    headers `trigger.headers`."""
    service.refuse_if_stopping()
    try:
        loaded = service.catalog.get(namespace, flow_id)
    except NotFoundError:
        raise NotFoundError("no such webhook") from None
    raw = await request.body()
    if len(raw) > MAX_BODY:
        raw = raw[:MAX_BODY]
    body: Any = raw.decode("utf-8", errors="replace")
    if "json" in request.headers.get("content-type", "") or body.lstrip().startswith(("{", "[")):
        with contextlib.suppress(ValueError):  # not JSON after all: kept as text
            body = json.loads(body) if body.strip() else None
    headers = {k: v for k, v in request.headers.items() if k.lower() not in _HIDDEN_HEADERS}
    execution_id = await in_thread(
        api.fire_webhook,
        service.store,
        service.worker,
        loaded,
        key,
        body=body,
        headers=headers,
        now=service.clock(),
    )
    return schemas.ExecutionRef(id=execution_id, state="CREATED", url=execution_url(execution_id))
