"""The caller's project: what it uses of each quota."""
from __future__ import annotations

from fastapi import APIRouter

from api.deps import ProjectDep, SessionDep, SettingsDep
from jobs import quotas

router = APIRouter(tags=["usage"])


@router.get("/usage")
def usage(session: SessionDep, settings: SettingsDep, project: ProjectDep) -> dict:
    """Datasets, stored bytes (by kind) and active jobs, each as `used` against `limit` (0: unlimited)."""
    return quotas.usage(session, settings, project)
