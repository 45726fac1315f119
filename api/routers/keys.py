"""The caller's project's API keys: list them, disable one (revocation: its requests answer 401)."""
from __future__ import annotations

from fastapi import APIRouter, HTTPException
from sqlalchemy import select

from api.deps import ProjectDep, SessionDep
from jobs.keys import KeyNotFound, disable_key
from jobs.tables import ApiKey

router = APIRouter(tags=["keys"])


def key_out(row: ApiKey) -> dict:
    return {"id": row.id, "prefix": row.prefix, "name": row.name, "disabled": row.disabled,
            "created_at": row.created_at.isoformat()}


@router.get("/keys")
def list_keys(session: SessionDep, project: ProjectDep) -> dict:
    rows = session.scalars(select(ApiKey).where(ApiKey.project_id == project).order_by(ApiKey.created_at)).all()
    return {"data": [key_out(r) for r in rows]}


@router.post("/keys/{key_id}/disable")
def disable(key_id: str, session: SessionDep, project: ProjectDep) -> dict:
    """Disable a key of the caller's project (the caller's own key too), by its id."""
    if not key_id.startswith("key_"):
        raise HTTPException(422, "give the key's id (key_..., listed by GET /v1/keys), not the key itself")
    try:
        row = disable_key(session, key_id, project)
    except KeyNotFound as exc:
        raise HTTPException(404, str(exc))
    session.commit()
    return key_out(row)
