"""Liveness, readiness (database reachable) and Prometheus metrics."""
from __future__ import annotations

import hmac

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import PlainTextResponse
from sqlalchemy import func, select, text

from api.deps import SessionDep, SettingsDep
from jobs import fleet, lifecycle
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


def check_metrics_token(request: Request, settings) -> None:
    """/metrics counts every project's jobs: with DARKMATTER_METRICS_TOKEN set it needs that token;
    without one it is open only when auth is off (a single-user service)."""
    if settings.metrics_token:
        given = request.headers.get("authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {settings.metrics_token}".encode()):
            raise HTTPException(401, "/metrics needs Authorization: Bearer <DARKMATTER_METRICS_TOKEN>",
                                headers={"WWW-Authenticate": "Bearer"})
    elif settings.auth:
        raise HTTPException(403, "/metrics is off: set DARKMATTER_METRICS_TOKEN to scrape it when auth is on")


@router.get("/metrics", response_class=PlainTextResponse)
def prometheus(request: Request, session: SessionDep, settings: SettingsDep) -> str:
    """Jobs by state, queue depth (queued jobs per queue: the database is the truth, the broker a
    doorbell), live workers per queue (their rows in `workers`), and HTTP latency histograms."""
    check_metrics_token(request, settings)
    lines = ["# HELP darkmatter_jobs Jobs by state.", "# TYPE darkmatter_jobs gauge"]
    for state, count in session.execute(select(Job.state, func.count()).group_by(Job.state)):
        lines.append(f'darkmatter_jobs{{state="{state}"}} {count}')
    depth = dict(session.execute(select(Job.queue, func.count()).where(Job.state.in_(lifecycle.WAITING))
                                 .group_by(Job.queue)).all())
    live: dict[str, int] = {}
    for worker in fleet.live_workers(session, settings):
        for queue in worker.queues or []:
            live[queue] = live.get(queue, 0) + 1
    lines += ["# HELP darkmatter_queue_depth Jobs waiting for a worker, per queue.", "# TYPE darkmatter_queue_depth gauge"]
    for queue in sorted(set(settings.queue_list) | set(depth)):
        lines.append(f'darkmatter_queue_depth{{queue="{queue}"}} {depth.get(queue, 0)}')
    lines += ["# HELP darkmatter_live_workers Workers seen in the last heartbeat window, per queue they consume.",
              "# TYPE darkmatter_live_workers gauge"]
    for queue in sorted(set(settings.queue_list) | set(live)):
        lines.append(f'darkmatter_live_workers{{queue="{queue}"}} {live.get(queue, 0)}')
    lines += request.app.state.http_metrics.render()
    return "\n".join(lines) + "\n"
