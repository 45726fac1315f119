"""Annotated dependencies: settings, a DB session, the caller's project and scope. The ones that
never block are `async def`: FastAPI runs a plain `def` dependency on a threadpool thread, a hop
(and a wait for a free thread under load) that would cost more than the work."""
from __future__ import annotations

from typing import Annotated, Iterator

from fastapi import Depends, HTTPException, Request
from sqlalchemy.orm import Session

from api.auth import Caller
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


async def current_caller(request: Request, settings: SettingsDep) -> Caller:
    """Set by api.guard, which checks the key (or launch token) of every /v1 request before its
    body is read; the default project when auth is off."""
    caller = getattr(request.state, "caller", None)
    if caller is None:
        if settings.auth:  # a route outside /v1 asked for a project: the guard did not run for it
            raise HTTPException(401, "an API key is required (Authorization: Bearer <key>)",
                                headers={"WWW-Authenticate": "Bearer"})
        caller = Caller(DEFAULT_PROJECT, None, "admin")
    return caller


CallerDep = Annotated[Caller, Depends(current_caller)]


async def current_project(caller: CallerDep) -> str:
    return caller.project


ProjectDep = Annotated[str, Depends(current_project)]


async def admin_project(caller: CallerDep) -> str:
    """The caller's project, for key management: admin keys only."""
    if caller.scope != "admin":
        raise HTTPException(403, "this key's scope is 'use': managing API keys needs an 'admin' key")
    return caller.project


AdminDep = Annotated[str, Depends(admin_project)]
