"""Datasets: register built-ins (uploads and URIs arrive in the datasets issue), list, inspect."""
from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query
from pydantic import BaseModel, ConfigDict
from sqlalchemy import select

from api.deps import ProjectDep, SessionDep
from api.schemas import DatasetOut
from core.data import DatasetUnavailable
from jobs.datasets import register_builtin
from jobs.tables import Dataset

router = APIRouter(tags=["datasets"])


class BuiltinRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    builtin: str


@router.post("/datasets", status_code=201, response_model=DatasetOut)
def create(body: BuiltinRequest, session: SessionDep, project: ProjectDep) -> Dataset:
    try:
        return register_builtin(session, project, body.builtin)
    except DatasetUnavailable as exc:
        raise HTTPException(422, str(exc))


@router.get("/datasets")
def list_datasets(session: SessionDep, project: ProjectDep, limit: Annotated[int, Query(ge=1, le=500)] = 100,
                  offset: Annotated[int, Query(ge=0)] = 0) -> dict:
    rows = session.scalars(select(Dataset).where(Dataset.project_id == project).order_by(Dataset.created_at)
                           .limit(limit).offset(offset)).all()
    return {"data": [DatasetOut.model_validate(r).model_dump(mode="json") for r in rows]}


@router.get("/datasets/{dataset_id}", response_model=DatasetOut)
def read(dataset_id: str, session: SessionDep, project: ProjectDep) -> Dataset:
    row = session.get(Dataset, dataset_id)
    if row is None or row.project_id != project:
        raise HTTPException(404, f"dataset {dataset_id!r} not found")
    return row
