"""Projects and API keys (the first admin key from the CLI on the server; only the hash is stored).
An `admin` key manages its project's keys, a `use` key submits and reads."""
from __future__ import annotations

import hashlib
import secrets

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from jobs.ids import new_id
from jobs.tables import ApiKey, Project

SCOPES = ("admin", "use")


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()


class KeyNotFound(LookupError):
    pass


class KeyQuotaExceeded(Exception):
    pass


def _new_key(session: Session, project_id: str, name: str, scope: str) -> tuple[ApiKey, str]:
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {', '.join(SCOPES)}")
    key = "dm_" + secrets.token_urlsafe(32)  # 256 random bits: guessing one is hopeless
    row = ApiKey(id=new_id("key"), project_id=project_id, key_hash=hash_key(key), prefix=key[:8], name=name,
                 scope=scope)
    session.add(row)
    session.flush()
    return row, key


def create_key(session: Session, project_name: str, name: str = "", scope: str = "admin") -> tuple[str, str]:
    """Create (or reuse) the project and a new key; returns (project_id, plaintext key, shown once).
    The operator's bootstrap on the server: not counted against max_keys_per_project."""
    project = session.scalar(select(Project).where(Project.name == project_name))
    if project is None:
        project = Project(id=new_id("prj"), name=project_name)
        session.add(project)
        session.flush()
    _, key = _new_key(session, project.id, name, scope)
    return project.id, key


def create_project_key(session: Session, project_id: str, name: str = "", scope: str = "use",
                       max_keys: int = 0) -> tuple[ApiKey, str]:
    """A new key in an existing project, at most `max_keys` keys a project (disabled ones count
    until deleted; 0: no cap); returns (row, plaintext key, shown once)."""
    if max_keys > 0:
        # serialise concurrent creations in one project on its row, so two cannot both pass the count
        session.scalar(select(Project.id).where(Project.id == project_id).with_for_update())
        held = session.scalar(select(func.count()).select_from(ApiKey).where(ApiKey.project_id == project_id))
        if held >= max_keys:
            raise KeyQuotaExceeded(f"key quota reached: this project holds {held} API keys, at most {max_keys} "
                                   "(DARKMATTER_MAX_KEYS_PER_PROJECT); delete a key you no longer use")
    return _new_key(session, project_id, name, scope)


def list_keys(session: Session, project_id: str) -> list[ApiKey]:
    return list(session.scalars(select(ApiKey).where(ApiKey.project_id == project_id).order_by(ApiKey.created_at)))


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


def delete_key(session: Session, ref: str, project_id: str | None = None) -> ApiKey:
    """Delete a key: its requests answer 401 and it no longer counts against the project's quota."""
    row = find_key(session, ref, project_id)
    session.delete(row)
    session.flush()
    return row
