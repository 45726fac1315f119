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
    """Disable a key of the caller's project (the caller's own key too), by its id: every request
    with it answers 401 from then on."""
    if not key_id.startswith("key_"):
        raise HTTPException(422, "give the key's id (key_..., listed by GET /v1/keys), not the key itself")
    try:
        row = keys.disable_key(session, key_id, project)
    except keys.KeyNotFound as exc:
        raise HTTPException(404, str(exc))
    session.commit()
    return KeyOut.model_validate(row).model_dump(mode="json")
