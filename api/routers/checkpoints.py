"""Checkpoints: metadata, safetensors download by part (ETag = sha256, Range), scores."""
from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import FileResponse, Response
from sqlalchemy import select

from api.deps import ProjectDep, SessionDep, SettingsDep
from api.schemas import CheckpointOut, ScoreOut
from core.checkpoint import CorruptCheckpoint
from jobs import scores
from jobs.exports import ExportFailed, onnx_artifact
from jobs.storage import store_for
from jobs.tables import Checkpoint

router = APIRouter(tags=["checkpoints"])


def get_checkpoint(session, project: str, checkpoint_id: str) -> Checkpoint:
    row = session.get(Checkpoint, checkpoint_id)
    if row is None or row.project_id != project:
        raise HTTPException(404, f"checkpoint {checkpoint_id!r} not found")
    return row


@router.get("/checkpoints")
def list_checkpoints(session: SessionDep, settings: SettingsDep, project: ProjectDep, job: str | None = None,
                     limit: Annotated[int, Query(ge=1, le=500)] = 100,
                     offset: Annotated[int, Query(ge=0, le=10**9)] = 0) -> dict:
    limit = min(limit, settings.page_size_max)
    q = select(Checkpoint).where(Checkpoint.project_id == project)
    if job:
        q = q.where(Checkpoint.job_id == job)
    rows = session.scalars(q.order_by(Checkpoint.created_at.desc()).limit(limit).offset(offset)).all()
    return {"data": [CheckpointOut.model_validate(r).model_dump(mode="json") for r in rows]}


@router.get("/checkpoints/{checkpoint_id}", response_model=CheckpointOut)
def read(checkpoint_id: str, session: SessionDep, project: ProjectDep) -> Checkpoint:
    return get_checkpoint(session, project, checkpoint_id)


@router.get("/checkpoints/{checkpoint_id}/download")
def download(checkpoint_id: str, request: Request, session: SessionDep, settings: SettingsDep, project: ProjectDep,
             part: Annotated[str, Query(pattern=r"^[a-z0-9_]{1,32}$", description=(
                 "backbone (what to use downstream: the teacher/target encoder when the method has one), "
                 "heads, full (the whole training state), or a method's other parts (e.g. student, online)"))]
             = "backbone",
             format: Annotated[Literal["safetensors", "onnx"], Query(description=(
                 "safetensors (the stored part), or onnx: the backbone as an ONNX encoder taking float32 "
                 "pixels (N, C, H, W) in 0..255 and giving the embeddings of POST /v1/embeddings"))]
             = "safetensors"):
    row = get_checkpoint(session, project, checkpoint_id)
    if format == "onnx":
        if part != "backbone":
            raise HTTPException(422, "format=onnx exports the backbone only; drop part or use part=backbone")
        try:
            path, info = onnx_artifact(store_for(settings), row)
        except (CorruptCheckpoint, FileNotFoundError) as exc:
            raise HTTPException(410, f"checkpoint {checkpoint_id} cannot be exported: {exc}")
        except ExportFailed as exc:
            raise HTTPException(422, f"checkpoint {checkpoint_id} ({row.backbone}) cannot be exported to ONNX: {exc}")
        return file_response(request, path, info["sha256"], f"{checkpoint_id}-backbone.onnx")
    if part not in row.parts:
        raise HTTPException(404, f"checkpoint {checkpoint_id} has no {part!r} part; it has: {', '.join(row.parts)}")
    info = row.parts[part]
    path = store_for(settings).local_path(info["key"])
    if not path.exists():
        raise HTTPException(410, f"the file of checkpoint {checkpoint_id} ({part}) is gone from the artifact store")
    return file_response(request, path, info["sha256"], f"{checkpoint_id}-{part}.safetensors")


def file_response(request: Request, path, sha256: str, filename: str) -> Response:
    """The file with ETag = sha256 (304 on If-None-Match); Range requests answer 206."""
    etag = f'"{sha256}"'
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers={"ETag": etag})
    return FileResponse(path, media_type="application/octet-stream", filename=filename,
                        headers={"ETag": etag, "X-Checksum-Sha256": sha256})


@router.get("/checkpoints/{checkpoint_id}/scores")
def checkpoint_scores(checkpoint_id: str, session: SessionDep, project: ProjectDep) -> dict:
    get_checkpoint(session, project, checkpoint_id)
    rows = scores.query(session, project, checkpoint=checkpoint_id, limit=1000)
    return {"data": [ScoreOut.model_validate(r).model_dump(mode="json") for r in rows]}
