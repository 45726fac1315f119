"""Live workers: each worker process renews its row (queues, devices) every sweep interval, so
the API can tell a user that no live worker consumes their job's queue."""
from __future__ import annotations

from datetime import timedelta

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from jobs.lifecycle import ACTIVE, WAITING
from jobs.settings import Settings
from jobs.db import db_now
from jobs.tables import Job, JobEvent, WorkerRow

RAY_WAITING = "waiting for the Ray cluster"  # the event of a multi-node job whose gang is not placed yet


def beat(session: Session, worker_id: str, hostname: str, queues: list[str], devices: list[str]) -> None:
    row = session.get(WorkerRow, worker_id)
    if row is None:
        session.add(WorkerRow(id=worker_id, hostname=hostname, queues=queues, devices=devices, heartbeat_at=db_now(session)))
    else:
        row.heartbeat_at, row.queues, row.devices = db_now(session), queues, devices


def leave(session: Session, worker_id: str) -> None:
    session.execute(delete(WorkerRow).where(WorkerRow.id == worker_id))


def live_window(settings: Settings) -> float:
    """A worker is live while its row is younger than this (a few sweep intervals)."""
    return max(3 * settings.sweep_interval, settings.heartbeat_timeout)


def live_workers(session: Session, settings: Settings) -> list[WorkerRow]:
    cutoff = db_now(session) - timedelta(seconds=live_window(settings))
    return list(session.scalars(select(WorkerRow).where(WorkerRow.heartbeat_at >= cutoff)))


def forget_dead(session: Session, settings: Settings, older_than: float = 3600.0) -> None:
    cutoff = db_now(session) - timedelta(seconds=max(older_than, live_window(settings)))
    session.execute(delete(WorkerRow).where(WorkerRow.heartbeat_at < cutoff))


def job_status(session: Session, settings: Settings, job: Job) -> tuple[str | None, list[str]]:
    """(a status line for a waiting job, warnings): whether any live worker consumes the job's
    queue. A multi-node job needs one worker: its processes run on the Ray cluster."""
    if job.state in ACTIVE and job.nodes > 1 and job.step == 0:  # claimed; its Ray run may not be placed yet
        last = session.scalar(select(JobEvent.message).where(JobEvent.job_id == job.id)
                              .order_by(JobEvent.id.desc()).limit(1))
        return (last if last and last.startswith(RAY_WAITING) else None), []
    if job.state not in WAITING:
        return None, []
    warnings = []
    consumers = sum(1 for w in live_workers(session, settings) if job.queue in (w.queues or []))
    if consumers == 0:
        warnings.append(f"no live worker consumes queue {job.queue!r}; start one with "
                        f"`darkmatter worker --queue {job.queue}`")
    return None, warnings



def too_few_devices(session: Session, settings: Settings, queue: str, devices: int) -> str | None:
    """Why a one-machine job of `devices` GPUs cannot run on `queue`, or None: every live worker
    of the queue owns GPUs, and none owns that many. (CPU workers run any number of gloo
    processes; a queue with no live worker is only warned about.)"""
    consumers = [w for w in live_workers(session, settings) if queue in (w.queues or [])]
    if not consumers or not all(w.devices for w in consumers):
        return None
    largest = max(len(w.devices) for w in consumers)
    if largest >= devices:
        return None
    return (f"the job asks for {devices} devices on one machine, but the live workers of queue {queue!r} own at "
            f"most {largest} GPUs; ask for fewer devices, give a worker more (--gpus), or use nodes > 1 on Ray")
