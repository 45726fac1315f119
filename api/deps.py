"""Annotated dependencies: settings, a DB session, the caller's project. The ones that never block
are `async def`: FastAPI runs a plain `def` dependency on a threadpool thread, a hop (and a wait
for a free thread under load) that would cost more than the work."""
from __future__ import annotations

from typing import Annotated, Iterator

from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
from sqlalchemy.orm import Session

from jobs.db import session_scope
from jobs.settings import Settings
from jobs.tables import DEFAULT_PROJECT


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


SettingsDep = Annotated[Settings, Depends(get_settings)]


def get_session(settings: SettingsDep) -> Iterator[Session]:
    with session_scope(settings.database_url) as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]


def project_of_key(request: Request, settings: Settings) -> str:
    """The key is checked in a session of its own, so that no pooled connection stays checked out
    for the request's whole length (an upload, a download, an event stream)."""
    from api.auth import project_for_request

    with session_scope(settings.database_url) as session:
        return project_for_request(request, session)


async def current_project(request: Request, settings: SettingsDep) -> str:
    """The project of the caller's API key; the default project when auth is off."""
    if not settings.auth:
        return DEFAULT_PROJECT
    return await run_in_threadpool(project_of_key, request, settings)


ProjectDep = Annotated[str, Depends(current_project)]
