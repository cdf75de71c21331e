"""Executions: start one (JSON inputs, or multipart with file inputs), list them page by
page (keyset cursor, newest first), read one, kill, restart and resume."""

from __future__ import annotations

import re
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.datastructures import UploadFile

from runner import api
from runner.errors import ConflictError, InputError, UsageError
from runner.loader import LoadedFlow
from runner.server import schemas, views
from runner.server.routes.deps import ServiceDep, in_thread
from runner.values import InputType

router = APIRouter(tags=["executions"])

MAX_PAGE = 1000
"""The most executions one page holds."""
MAX_UPLOAD_FILES = 100
KILL_WAIT_S = 5.0
"""How long a kill request waits for the execution to end before answering 202."""

_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


def execution_url(execution_id: str) -> str:
    return f"/api/v1/executions/{execution_id}"


def _ref(execution_id: str, state: str) -> schemas.ExecutionRef:
    return schemas.ExecutionRef(id=execution_id, state=state, url=execution_url(execution_id))


def _parse_json(body: bytes, model: type[Any]) -> Any:
    try:
        return model.model_validate_json(body or b"{}")
    except ValidationError as exc:
        raise RequestValidationError(exc.errors(include_url=False)) from None


def _refuse_file_paths(loaded: LoadedFlow, inputs: dict[str, Any]) -> None:
    """A file input's value must be uploaded: a path would read the server's own files."""
    files = [spec.id for spec in loaded.flow.inputs if spec.type is InputType.FILE]
    given = [name for name in files if name in inputs]
    if given:
        raise InputError(
            f"file input {given[0]!r} must be uploaded as a file part of a"
            " multipart/form-data request, not given as a path"
        )


async def _form_inputs(request: Request, loaded: LoadedFlow, folder: Path) -> dict[str, Any]:
    files = {spec.id for spec in loaded.flow.inputs if spec.type is InputType.FILE}
    inputs: dict[str, Any] = {}
    async with request.form(max_files=MAX_UPLOAD_FILES) as form:
        for name, value in form.multi_items():
            if isinstance(value, UploadFile):
                if name not in files:
                    raise InputError(f"input {name!r} is not a file input: send it as a field")
                safe = _SAFE_NAME.sub("_", Path(value.filename or name).name).strip("._")
                target = folder / name / (safe or name)
                target.parent.mkdir(parents=True, exist_ok=True)
                with target.open("wb") as out:
                    while chunk := await value.read(1 << 20):
                        out.write(chunk)
                inputs[name] = str(target)
            elif name in files:
                raise InputError(f"file input {name!r} must be uploaded as a file part")
            else:
                inputs[name] = value
    return inputs


@router.get("/executions", response_model=schemas.ExecutionPageOut)
def list_executions(
    service: ServiceDep,
    namespace: str | None = None,
    flow_id: str | None = None,
    state: Annotated[list[str] | None, Query(description="Any of these states (repeat).")] = None,
    label: Annotated[
        list[str] | None, Query(description="`key:value`; every one must match.")
    ] = None,
    created_after: datetime | None = None,
    created_before: datetime | None = None,
    after: Annotated[str | None, Query(description="The `next` of the previous page.")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50,
) -> JSONResponse:
    """Executions newest first, one page at a time: pass `next` as `after` for the next
    page (executions started meanwhile do not shift the pages)."""
    labels = {}
    for item in label or ():
        key, sep, value = item.partition(":")
        if not sep or not key:
            raise UsageError(f"label {item!r} must be key:value")
        labels[key] = value
    page = api.list_executions(
        service.store,
        namespace=namespace,
        flow_id=flow_id,
        states=state or (),
        labels=labels,
        created_after=created_after,
        created_before=created_before,
        after=after,
        limit=limit,
    )
    # Written directly, as the execution document is: the list is on every page's path.
    return JSONResponse(
        {
            "executions": [views.execution_summary(r) for r in page.executions],
            "next": page.next_cursor,
        }
    )


@router.get(
    "/executions/{execution_id}",
    response_model=schemas.ExecutionOut,
    responses={404: {"model": schemas.ErrorBody}},
)
def get_execution(execution_id: str, service: ServiceDep) -> JSONResponse:
    """One execution with its task runs (the document of `runner show --json`); the id
    may be a unique prefix."""
    # Written as `runner show --json` writes it (times as isoformat gives them).
    return JSONResponse(views.execution(api.get_execution(service.store, execution_id)))


@router.get(
    "/executions/{execution_id}/flow",
    response_model=schemas.ExecutionFlow,
    responses={404: {"model": schemas.ErrorBody}},
)
def get_execution_flow(execution_id: str, service: ServiceDep) -> schemas.ExecutionFlow:
    """The flow as this execution ran it: the source of its revision, its inputs (with
    their types) and its task graph, whatever the flow file has become since."""
    return views.execution_flow(api.execution_flow(service.store, execution_id))


@router.post(
    "/executions/{execution_id}/kill",
    response_model=schemas.ExecutionRef,
    responses={
        202: {"model": schemas.ExecutionRef, "description": "Asked; not ended yet."},
        409: {"model": schemas.ErrorBody, "description": "It has already ended."},
    },
)
def kill_execution(execution_id: str, service: ServiceDep) -> JSONResponse:
    """Kill a running, queued or paused execution, wherever it runs; 200 once it ended
    (KILLED), 202 if its runner has not answered yet."""
    record = api.get_execution(service.store, execution_id)
    if record.state.is_final:
        raise ConflictError(f"execution {record.id} has already ended: {record.state.value}")
    state = api.kill_execution(
        record.id,
        store=service.store,
        backend=service.backend,
        wait_s=KILL_WAIT_S,
        worker=service.worker,
    )
    body = _ref(record.id, state.value).model_dump()
    return JSONResponse(body, status_code=200 if state.is_final else 202)


@router.post(
    "/executions/{execution_id}/restart",
    status_code=202,
    response_model=schemas.ExecutionRef,
    responses={409: {"model": schemas.ErrorBody, "description": "Not FAILED or KILLED."}},
)
async def restart_execution(
    execution_id: str, request: Request, service: ServiceDep
) -> schemas.ExecutionRef:
    """Run a FAILED or KILLED execution again from where it failed (`{"from": TASK}`
    reruns that task and what follows too), in the background."""
    service.refuse_if_stopping()
    body: schemas.Restart = _parse_json(await request.body(), schemas.Restart)
    restarted = await in_thread(service.worker.restart, execution_id, from_task=body.from_task)
    return _ref(restarted, "CREATED")


@router.post(
    "/executions/{execution_id}/resume",
    status_code=202,
    response_model=schemas.ExecutionRef,
    responses={
        409: {"model": schemas.ErrorBody, "description": "Not PAUSED (any more)."},
        422: {"model": schemas.ErrorBody, "description": "Inputs that do not fit."},
    },
)
async def resume_execution(
    execution_id: str, request: Request, service: ServiceDep
) -> schemas.ExecutionRef:
    """Resume a PAUSED execution: `{"inputs": {...}}` gives the inputs its pause task
    declares (they become that task's outputs); `task` picks one of several paused."""
    service.refuse_if_stopping()
    body: schemas.Resume = _parse_json(await request.body(), schemas.Resume)
    resumed = await in_thread(service.worker.resume, execution_id, body.inputs, task=body.task)
    return _ref(resumed, "CREATED")


# Declared last: `/executions/{id}/kill` (and restart, resume) would match it otherwise.
@router.post(
    "/executions/{namespace}/{flow_id}",
    status_code=201,
    response_model=schemas.ExecutionRef,
    responses={
        404: {"model": schemas.ErrorBody},
        422: {"model": schemas.ErrorBody, "description": "Inputs that do not fit the flow."},
        503: {"model": schemas.ErrorBody, "description": "The server is shutting down."},
    },
    openapi_extra={
        "requestBody": {
            "content": {
                "application/json": {"schema": schemas.NewExecution.model_json_schema()},
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "description": "One field per input; a file input as a file part.",
                        "additionalProperties": True,
                    }
                },
            }
        }
    },
)
async def create_execution(
    namespace: str, flow_id: str, request: Request, service: ServiceDep
) -> schemas.ExecutionRef:
    """Start an execution of the flow in the background; answers at once with its id
    (then follow it with `GET /executions/{id}` and its logs). JSON: `{"inputs": {...},
    "labels": {...}}`; multipart: one field per input, a file input as a file part."""
    service.refuse_if_stopping()
    loaded = service.catalog.get(namespace, flow_id)
    content_type = request.headers.get("content-type", "")
    labels: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="runner-upload-") as folder:
        if content_type.startswith("multipart/form-data"):
            inputs = await _form_inputs(request, loaded, Path(folder))
        else:
            new = _parse_json(await request.body(), schemas.NewExecution)
            _refuse_file_paths(loaded, new.inputs)
            inputs, labels = dict(new.inputs), dict(new.labels)
        # The files are read into the workspace tar before `submit` returns.
        execution_id = await in_thread(
            api.submit, loaded, inputs, store=service.store, worker=service.worker, labels=labels
        )
    return _ref(execution_id, "CREATED")
