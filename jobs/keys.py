"""Projects and API keys (created from the CLI; only the hash is stored)."""
from __future__ import annotations

import hashlib
import secrets

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from jobs.ids import new_id
from jobs.tables import ApiKey, Project


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def create_key(session: Session, project_name: str, name: str = "") -> tuple[str, str]:
    """Create (or reuse) the project and a new key; returns (project_id, plaintext key, shown once)."""
    project = session.scalar(select(Project).where(Project.name == project_name))
    if project is None:
        project = Project(id=new_id("prj"), name=project_name)
        session.add(project)
        session.flush()
    key = "dm_" + secrets.token_urlsafe(32)
    session.add(ApiKey(id=new_id("key"), project_id=project.id, key_hash=hash_key(key), prefix=key[:8], name=name))
    session.flush()
    return project.id, key


def create_project_key(session: Session, project_id: str, name: str = "") -> tuple[ApiKey, str]:
    """A new key in an existing project; returns (row, plaintext key, shown once)."""
    key = "dm_" + secrets.token_urlsafe(32)
    row = ApiKey(id=new_id("key"), project_id=project_id, key_hash=hash_key(key), prefix=key[:8], name=name)
    session.add(row)
    session.flush()
    return row, key


def list_keys(session: Session, project_id: str) -> list[ApiKey]:
    return list(session.scalars(select(ApiKey).where(ApiKey.project_id == project_id).order_by(ApiKey.created_at)))


class KeyNotFound(LookupError):
    pass


def find_key(session: Session, ref: str, project_id: str | None = None) -> ApiKey:
    """A key by its id (key_...), or by the plaintext key itself; limited to one project when given."""
    q = select(ApiKey).where(or_(ApiKey.id == ref, ApiKey.key_hash == hash_key(ref)))
    if project_id is not None:
        q = q.where(ApiKey.project_id == project_id)
    row = session.scalar(q)
    if row is None:
        raise KeyNotFound(f"API key {ref[:12]!r} not found" + (" in this project" if project_id else ""))
    return row


def disable_key(session: Session, ref: str, project_id: str | None = None) -> ApiKey:
    """Disable a key for good: every request with it answers 401 from then on."""
    row = find_key(session, ref, project_id)
    row.disabled = True
    session.flush()
    return row
