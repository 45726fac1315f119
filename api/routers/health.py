"""Liveness, readiness (database reachable) and Prometheus metrics."""
from __future__ import annotations

from fastapi import APIRouter, HTTPException
from fastapi.responses import PlainTextResponse
from sqlalchemy import func, select, text

from api.deps import SessionDep
from jobs.tables import Job

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> dict:
    return {"status": "ok"}


@router.get("/readyz")
def readyz(session: SessionDep) -> dict:
    try:
        session.execute(text("SELECT 1"))
    except Exception as exc:
        raise HTTPException(503, f"database unavailable: {type(exc).__name__}")
    return {"status": "ready"}


@router.get("/metrics", response_class=PlainTextResponse)
def prometheus(session: SessionDep) -> str:
    lines = ["# HELP darkmatter_jobs Jobs by state.", "# TYPE darkmatter_jobs gauge"]
    for state, count in session.execute(select(Job.state, func.count()).group_by(Job.state)):
        lines.append(f'darkmatter_jobs{{state="{state}"}} {count}')
    return "\n".join(lines) + "\n"
