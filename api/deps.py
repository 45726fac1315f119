"""Annotated dependencies: settings, a DB session, the caller's project."""
from __future__ import annotations

from typing import Annotated, Iterator

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from jobs.db import session_scope
from jobs.settings import Settings
from jobs.tables import DEFAULT_PROJECT


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


SettingsDep = Annotated[Settings, Depends(get_settings)]


def get_session(settings: SettingsDep) -> Iterator[Session]:
    with session_scope(settings.database_url) as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]


def current_project(request: Request, settings: SettingsDep) -> str:
    """The project of the caller's API key; the default project when auth is off. The key is
    checked in a session of its own, so that no pooled connection stays checked out for the
    request's whole length (an upload, a download, an event stream)."""
    if not settings.auth:
        return DEFAULT_PROJECT
    from api.auth import project_for_request

    with session_scope(settings.database_url) as session:
        return project_for_request(request, session)


ProjectDep = Annotated[str, Depends(current_project)]
