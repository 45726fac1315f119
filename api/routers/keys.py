"""API keys of the caller's project: list, create (the key is shown once), disable."""
from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, HTTPException
from pydantic import BaseModel, ConfigDict, Field

from api.deps import ProjectDep, SessionDep
from api.schemas import Out
from jobs import keys

router = APIRouter(tags=["keys"])


class KeyOut(Out):
    id: str
    project_id: str
    prefix: str
    name: str
    disabled: bool
    created_at: datetime


class NewKey(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field("", max_length=200)


@router.get("/keys")
def list_keys(session: SessionDep, project: ProjectDep) -> dict:
    return {"data": [KeyOut.model_validate(r).model_dump(mode="json") for r in keys.list_keys(session, project)]}


@router.post("/keys", status_code=201)
def create_key(body: NewKey, session: SessionDep, project: ProjectDep) -> dict:
    """A new key for the caller's project; `key` is shown in this answer only (its hash is stored)."""
    row, plaintext = keys.create_project_key(session, project, body.name)
    session.commit()
    return {**KeyOut.model_validate(row).model_dump(mode="json"), "key": plaintext}


@router.post("/keys/{key_id}/disable")
def disable_key(key_id: str, session: SessionDep, project: ProjectDep) -> dict:
    row = keys.disable_key(session, project, key_id)
    if row is None:
        raise HTTPException(404, f"key {key_id!r} not found in this project")
    session.commit()
    return KeyOut.model_validate(row).model_dump(mode="json")
