"""Checkpoints: metadata, safetensors download by part (ETag = sha256, Range), scores."""
from __future__ import annotations

import re
from typing import Annotated, Iterator, Literal

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import FileResponse, Response, StreamingResponse
from sqlalchemy import select

from api.concurrency import slots
from api.deps import ProjectDep, SessionDep, SettingsDep
from api.removal import delete_now
from api.schemas import CheckpointOut, ScoreOut
from core.checkpoint import CorruptCheckpoint
from jobs import deletion, scores
from jobs.exports import ExportFailed, ExportTooLarge, onnx_artifact
from jobs.db import session_scope
from jobs.storage import store_for
from jobs.tables import Checkpoint

router = APIRouter(tags=["checkpoints"])
CHUNK_BYTES = 1 << 20


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


@router.delete("/checkpoints/{checkpoint_id}")
def delete(checkpoint_id: str, request: Request, session: SessionDep, settings: SettingsDep,
           project: ProjectDep) -> dict:
    """Delete a checkpoint: its files (every part, the ONNX export), cached features and scores.
    409 while its job is still queued or running, while a queued or running job reads it, or
    while it serves an index (delete that embed-index job first)."""
    return delete_now(request, session, settings, lambda: deletion.delete_checkpoint(session, project, checkpoint_id))


@router.get("/checkpoints/{checkpoint_id}/download")
@router.head("/checkpoints/{checkpoint_id}/download", include_in_schema=False)
def download(checkpoint_id: str, request: Request, settings: SettingsDep, project: ProjectDep,
             part: Annotated[str, Query(pattern=r"^[a-z0-9_]{1,32}$", description=(
                 "backbone (what to use downstream: the teacher/target encoder when the method has one), "
                 "heads, full (the whole training state), or a method's other parts (e.g. student, online)"))]
             = "backbone",
             format: Annotated[Literal["safetensors", "onnx"], Query(description=(
                 "safetensors (the stored part), or onnx: the backbone as an ONNX encoder taking float32 "
                 "pixels (N, C, H, W) in 0..255 and giving the embeddings of POST /v1/embeddings"))]
             = "safetensors"):
    """The part's safetensors file, or the backbone as ONNX. A remote store's object is streamed
    as it is read (Range too), never fetched whole first; no database connection is held while the
    bytes go out."""
    with session_scope(settings.database_url) as session:
        row = get_checkpoint(session, project, checkpoint_id)
        if format == "onnx" and part != "backbone":
            raise HTTPException(422, "format=onnx exports the backbone only; drop part or use part=backbone")
        if format == "safetensors" and part not in row.parts:
            raise HTTPException(404, f"checkpoint {checkpoint_id} has no {part!r} part; it has: {', '.join(row.parts)}")
        info = row.parts.get(part)
    if format == "onnx":
        try:
            admit = slots(request, "expensive", "maps or ONNX exports", settings.expensive_total,
                          settings.expensive_per_project)
            path, exported = onnx_artifact(store_for(settings), row, settings.max_onnx_parameters,
                                           lambda: admit.hold(project))
        except (CorruptCheckpoint, FileNotFoundError) as exc:
            raise HTTPException(410, f"checkpoint {checkpoint_id} cannot be exported: {exc}")
        except ExportTooLarge as exc:
            raise HTTPException(422, f"checkpoint {checkpoint_id} ({row.backbone}) is too large to export: {exc}")
        except ExportFailed as exc:
            raise HTTPException(422, f"checkpoint {checkpoint_id} ({row.backbone}) cannot be exported to ONNX: {exc}")
        return file_response(request, path, exported["sha256"], f"{checkpoint_id}-backbone.onnx")
    etag = f'"{info["sha256"]}"'
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers={"ETag": etag})
    headers = {"ETag": etag, "X-Checksum-Sha256": info["sha256"]}
    filename = f"{checkpoint_id}-{part}.safetensors"
    gone = HTTPException(410, f"the file of checkpoint {checkpoint_id} ({part}) is gone from the artifact store")
    store = store_for(settings)
    path = store.cached_path(info["key"])
    if path is not None:
        return FileResponse(path, media_type="application/octet-stream", filename=filename, headers=headers)
    size = store.size(info["key"])
    if size is None:
        raise gone
    return streamed(request, store, info["key"], size, filename, headers)


def byte_range(request: Request, size: int) -> tuple[int, int] | None:
    """(first, last) of a single `Range: bytes=...` request; None for the whole file (no Range, or
    several ranges: answered whole, as RFC 9110 allows); 416 when it cannot be satisfied."""
    value = request.headers.get("range")
    match = re.fullmatch(r"\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*", value or "")
    if not value or match is None:
        return None
    first, last = match.groups()
    if not first and not last:
        return None
    if not first:  # the last N bytes
        first, last = max(0, size - int(last)), size - 1
    else:
        first, last = int(first), min(int(last) if last else size - 1, size - 1)
    if first >= size or first > last:
        raise HTTPException(416, f"range not satisfiable: the file has {size} bytes",
                            headers={"Content-Range": f"bytes */{size}"})
    return first, last


def streamed(request: Request, store, key: str, size: int, filename: str, headers: dict) -> Response:
    span = byte_range(request, size)
    first, last = span or (0, size - 1)
    headers = {**headers, "Accept-Ranges": "bytes", "Content-Length": str(last - first + 1),
               "Content-Disposition": f'attachment; filename="{filename}"'}
    status = 206 if span else 200
    if span:
        headers["Content-Range"] = f"bytes {first}-{last}/{size}"
    if request.method == "HEAD":
        return Response(status_code=status, headers=headers, media_type="application/octet-stream")

    def chunks() -> Iterator[bytes]:  # iterated in a worker thread by Starlette
        left = last - first + 1
        with store.open_remote(key) as source:
            source.seek(first)
            while left > 0:
                chunk = source.read(min(CHUNK_BYTES, left))
                if not chunk:
                    raise OSError(f"artifact {key} ended {left} bytes early")
                left -= len(chunk)
                yield chunk

    return StreamingResponse(chunks(), status_code=status, headers=headers, media_type="application/octet-stream")


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
