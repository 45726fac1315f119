"""Datasets: upload a file (multipart), register a URI or a built-in (JSON), list, inspect.

Uploads and URIs start `pending`; a worker scans them into `ready` or `invalid` (the reason is
in `error`)."""
from __future__ import annotations

import json
from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from sqlalchemy import select

from api.concurrency import slots
from api.deps import ProjectDep, SessionDep, SettingsDep
from api.removal import delete_now
from api.schemas import DatasetOut
from api.uploads import read_form
from core.data import DatasetUnavailable
from core.data.scan import FILE_FORMATS, check_upload, format_from_name
from jobs import datasets, deletion, quotas, sources
from jobs.ids import new_id
from jobs.queue import enqueue_scan
from jobs.quotas import QuotaExceeded, Quotas
from jobs.storage import store_for
from jobs.tables import Dataset
from jobs.uploads import UploadSink

router = APIRouter(tags=["datasets"])


class Options(BaseModel):
    model_config = ConfigDict(extra="forbid")
    image_size: int | None = Field(None, ge=4, le=1024, description="resize images to this square side")
    test_fraction: float = Field(0.2, gt=0, lt=1, description="held out when the source has no test/ folder")
    seed: int = Field(0, ge=0, le=2**31 - 1)
    short_side: int | None = Field(None, ge=8, le=1024, description="keep each image's aspect ratio, its shorter side "
                                   "stored this long (crops are cut from it); default: DARKMATTER_STORE_SHORT_SIDE (256) where "
                                   "some image is not square, else square at the most common side")

    @model_validator(mode="after")
    def one_way_to_store(self):
        if self.image_size is not None and self.short_side is not None:
            raise ValueError("give image_size (square images) or short_side (aspect kept), not both")
        return self


class BuiltinRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    builtin: str


class UriRequest(Options):
    uri: str | list[str] = Field(description="s3://bucket/key, a local path under DARKMATTER_DATA_ROOTS, or "
                                             "WebDataset shards (brace pattern or list)")
    format: Literal[datasets.FORMATS] = Field(description=f"one of {', '.join(datasets.FORMATS)}")
    name: str | None = Field(None, max_length=200)


UPLOAD_DOC = {"requestBody": {"content": {
    "multipart/form-data": {"schema": {"type": "object", "required": ["file"], "properties": {
        "file": {"type": "string", "format": "binary"}, "format": {"type": "string", "enum": list(FILE_FORMATS)},
        "name": {"type": "string"}, "image_size": {"type": "integer"}, "test_fraction": {"type": "number"},
        "seed": {"type": "integer"}, "short_side": {"type": "integer"}}}},
    "application/json": {"schema": {"oneOf": [BuiltinRequest.model_json_schema(), UriRequest.model_json_schema()]}},
}}}


def _errors(exc: ValidationError) -> list[dict]:
    return [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in exc.errors()]


@router.post("/datasets", status_code=201, response_model=DatasetOut, openapi_extra=UPLOAD_DOC)
async def create(request: Request, session: SessionDep, settings: SettingsDep, project: ProjectDep) -> Dataset:
    """Upload a dataset file (multipart field `file`), or JSON `{"builtin": name}` or
    `{"uri": ..., "format": ...}`."""
    # case-insensitive, as the body-size cap and api.guard decide: they let a multipart body through unread
    if request.headers.get("content-type", "").lower().startswith("multipart/"):
        uploads = slots(request, "uploads", "uploads", settings.max_uploads, settings.max_uploads_per_project)
        with uploads.hold(project):  # each holds a disk stream and a thread for as long as the client sends
            return await upload(request, session, settings, project)
    try:  # the body is capped (max_json_body_bytes) and its nesting checked by the middleware
        body = json.loads(await request.body())
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise HTTPException(422, f"body is not JSON: {exc}")
    try:
        if isinstance(body, dict) and "builtin" in body:
            spec = BuiltinRequest.model_validate(body)

            def register_builtin():
                row = datasets.register_builtin(session, project, spec.builtin)
                session.commit()  # before the answer: a client may submit a job on it straight away
                return row

            return await run_in_threadpool(register_builtin)
        spec = UriRequest.model_validate(body)
    except ValidationError as exc:
        raise HTTPException(422, _errors(exc))
    except DatasetUnavailable as exc:
        raise HTTPException(422, str(exc))
    options = spec.model_dump(include={"image_size", "test_fraction", "seed", "short_side"})

    def register():
        quotas.admit_dataset(session, Quotas.from_settings(settings), project)
        row = datasets.register_uri(session, settings, project, spec.uri, spec.format, spec.name, options)
        session.commit()
        return row

    try:
        row = await run_in_threadpool(register)
    except DatasetUnavailable as exc:
        raise HTTPException(422, str(exc))
    except QuotaExceeded as exc:
        await run_in_threadpool(session.rollback)  # the project's lock goes now
        raise HTTPException(exc.status, str(exc))
    await run_in_threadpool(enqueue_scan, settings, row.id)  # a broker call: never on the event loop
    return row


def upload_fits(session, settings, project: str, request: Request) -> None:
    """Refuse an upload the quotas cannot take before its bytes are read (the announced length
    against the stored-bytes quota); the insert checks again under the project's lock."""
    try:
        length = int(request.headers.get("content-length") or 0)
    except ValueError:
        length = 0
    try:
        quotas.check_dataset(session, Quotas.from_settings(settings), project, length)
    except QuotaExceeded as exc:
        raise HTTPException(exc.status, str(exc))
    finally:
        session.rollback()  # no read transaction stays open while the upload streams


async def upload(request: Request, session, settings, project: str) -> Dataset:
    await run_in_threadpool(upload_fits, session, settings, project, request)
    store = store_for(settings)
    dataset_id = new_id("ds")
    key = f"datasets/{dataset_id}/source"
    form = await read_form(request, lambda: UploadSink(store, key, settings.max_upload_bytes),
                           settings.max_upload_bytes)
    sink = form.sink
    try:
        fmt = form.fields.get("format") or request.query_params.get("format") or format_from_name(form.filename or "")
        if fmt not in FILE_FORMATS:
            raise DatasetUnavailable(f"unknown format {fmt!r} for {form.filename!r}; name the file with a known "
                                     f"extension or send a 'format' field: one of {', '.join(FILE_FORMATS)}")
        raw = {k: v for k, v in form.fields.items() if k in Options.model_fields}
        try:
            options = Options.model_validate(raw).model_dump()
        except ValidationError as exc:
            raise HTTPException(422, _errors(exc))
        sink.close()
        # the magic number and a zip's entry count only: members are listed by the scan's capped child
        await run_in_threadpool(check_upload, sink.path, fmt, sources.limits(settings))
        digest = await run_in_threadpool(sink.commit)
    except DatasetUnavailable as exc:
        sink.abort()
        raise HTTPException(422, str(exc))
    except BaseException:
        sink.abort()
        raise
    name = form.fields.get("name") or form.filename or dataset_id

    def add():
        quotas.admit_dataset(session, Quotas.from_settings(settings), project, sink.size)
        row = datasets.add_upload(session, project, dataset_id, key, fmt, name, options, digest, sink.size)
        session.commit()
        return row

    try:
        row = await run_in_threadpool(add)
    except BaseException as exc:
        store.delete(f"datasets/{dataset_id}")
        if isinstance(exc, QuotaExceeded):
            await run_in_threadpool(session.rollback)
            raise HTTPException(exc.status, str(exc))
        raise
    await run_in_threadpool(enqueue_scan, settings, row.id)  # a broker call: never on the event loop
    return row


@router.get("/datasets")
def list_datasets(session: SessionDep, project: ProjectDep, limit: Annotated[int, Query(ge=1, le=500)] = 100,
                  offset: Annotated[int, Query(ge=0, le=10**9)] = 0) -> dict:
    rows = session.scalars(select(Dataset).where(Dataset.project_id == project).order_by(Dataset.created_at)
                           .limit(limit).offset(offset)).all()
    return {"data": [DatasetOut.model_validate(r).model_dump(mode="json") for r in rows]}


@router.get("/datasets/{dataset_id}", response_model=DatasetOut)
def read(dataset_id: str, session: SessionDep, project: ProjectDep) -> Dataset:
    """A dataset by id, or by name (the newest of that name)."""
    row = datasets.find(session, project, dataset_id)
    if row is None:
        raise HTTPException(404, f"dataset {dataset_id!r} not found (neither an id nor a name)")
    return row


@router.delete("/datasets/{dataset_id}")
def delete(dataset_id: str, request: Request, session: SessionDep, settings: SettingsDep, project: ProjectDep) -> dict:
    """Delete a dataset: its uploaded and prepared files, cached features, and the scores measured
    on it. 409 while a queued or running job uses it or while it is being scanned; 403 for a
    built-in (shared by every project)."""
    return delete_now(request, session, settings, lambda: deletion.delete_dataset(session, project, dataset_id))
