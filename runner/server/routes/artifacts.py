"""Artifacts: the files an execution's tasks copied out, listed and downloaded."""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import FileResponse

from runner import api
from runner.errors import NotFoundError
from runner.server import schemas
from runner.server.routes.deps import ServiceDep

router = APIRouter(tags=["artifacts"])


@router.get(
    "/executions/{execution_id}/artifacts",
    response_model=schemas.ArtifactList,
    responses={404: {"model": schemas.ErrorBody}},
)
def list_artifacts(
    service: ServiceDep,
    execution_id: str,
    task: Annotated[str | None, Query(description="Only this task run's files.")] = None,
) -> schemas.ArtifactList:
    """The files copied out of the execution's task runs (`artifacts:` of a task)."""
    found = api.list_artifacts(service.store, execution_id, task_id=task)
    return schemas.ArtifactList(
        artifacts=[
            schemas.ArtifactOut(
                id=a.id,
                task_run_id=a.task_run_id,
                task_id=a.task_id,
                path=a.path,
                size=a.size,
                sha256=a.sha256,
                created_at=a.created_at,
                url=f"/api/v1/executions/{a.execution_id}/artifacts/{a.id}",
            )
            for a in found
        ]
    )


@router.get(
    "/executions/{execution_id}/artifacts/{artifact_id}",
    response_class=FileResponse,
    responses={
        200: {"content": {"application/octet-stream": {}}, "description": "The file."},
        404: {"model": schemas.ErrorBody},
    },
)
def download_artifact(execution_id: str, artifact_id: int, service: ServiceDep) -> FileResponse:
    """One artifact's content, as a download named after the file."""
    artifact = api.get_artifact(service.store, execution_id, artifact_id)
    local = Path(artifact.local_path)
    if not local.is_file():
        raise NotFoundError(
            f"artifact {artifact_id} ({artifact.path}) is not on this server: it was copied to"
            f" {artifact.local_path} on the machine that ran task {artifact.task_id}"
        )
    return FileResponse(
        local, filename=PurePosixPath(artifact.path).name, media_type="application/octet-stream"
    )
