"""API keys of the caller's project: list, create (the key is shown once), disable, delete. Admin
keys only: a `use` key gets 403 here, so a leaked use key cannot mint keys or lock out the owner."""
from __future__ import annotations

from datetime import datetime
from typing import Literal

from fastapi import APIRouter, HTTPException
from pydantic import BaseModel, ConfigDict, Field

from api.deps import AdminDep, SessionDep, SettingsDep
from api.schemas import Out
from jobs import keys

router = APIRouter(tags=["keys"])


class KeyOut(Out):
    id: str
    project_id: str
    prefix: str
    name: str
    scope: str
    disabled: bool
    created_at: datetime


class NewKey(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field("", max_length=200)
    scope: Literal["admin", "use"] = "use"


def key_id_only(key_id: str) -> None:
    if not key_id.startswith("key_"):
        raise HTTPException(422, "give the key's id (key_..., listed by GET /v1/keys), not the key itself")


@router.get("/keys")
def list_keys(session: SessionDep, project: AdminDep) -> dict:
    return {"data": [KeyOut.model_validate(r).model_dump(mode="json") for r in keys.list_keys(session, project)]}


@router.post("/keys", status_code=201)
def create_key(body: NewKey, session: SessionDep, settings: SettingsDep, project: AdminDep) -> dict:
    """A new key for the caller's project (scope `use` unless asked); `key` is shown in this answer
    only (its hash is stored). At most DARKMATTER_MAX_KEYS_PER_PROJECT keys a project: 429 beyond."""
    try:
        row, plaintext = keys.create_project_key(session, project, body.name, body.scope,
                                                 settings.max_keys_per_project)
    except keys.KeyQuotaExceeded as exc:
        raise HTTPException(429, str(exc))
    session.commit()
    return {**KeyOut.model_validate(row).model_dump(mode="json"), "key": plaintext}


@router.post("/keys/{key_id}/disable")
def disable_key(key_id: str, session: SessionDep, project: AdminDep) -> dict:
    """Disable a key of the caller's project (the caller's own key too), by its id: every request
    with it answers 401 from then on, and its open event streams close."""
    key_id_only(key_id)
    try:
        row = keys.disable_key(session, key_id, project)
    except keys.KeyNotFound as exc:
        raise HTTPException(404, str(exc))
    session.commit()
    return KeyOut.model_validate(row).model_dump(mode="json")


@router.delete("/keys/{key_id}")
def delete_key(key_id: str, session: SessionDep, project: AdminDep) -> dict:
    """Delete a key of the caller's project by its id: its requests answer 401, its open event
    streams close, and it no longer counts against the project's key quota."""
    key_id_only(key_id)
    try:
        row = keys.delete_key(session, key_id, project)
    except keys.KeyNotFound as exc:
        raise HTTPException(404, str(exc))
    out = {"id": row.id, "deleted": True}
    session.commit()
    return out
