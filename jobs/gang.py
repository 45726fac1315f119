"""Gang scheduling of multi-node jobs: one node rank per worker, claimed with a conditional UPDATE.

A `nodes: M` job has M rows in job_nodes. A worker that takes the job's doorbell claims a free
rank (or one whose holder stopped heartbeating) and holds it by heartbeat. The worker holding
rank 0 publishes the torchrun rendezvous endpoint on the job row and, once all M ranks are
held, takes the job's lease (lifecycle.claim); the others then join. A worker that waits
longer than the gang timeout gives its rank back, so no device is held for a job that cannot
start."""
from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import Session

from jobs.db import db_now
from jobs.lifecycle import WAITING
from jobs.tables import Job, JobNode


def add_nodes(session: Session, job_id: str, nodes: int) -> None:
    session.add_all(JobNode(job_id=job_id, node_rank=rank) for rank in range(nodes))


def _cutoff(session: Session, stale_seconds: float) -> datetime:
    return db_now(session) - timedelta(seconds=stale_seconds)


def claim_node(session: Session, job_id: str, worker_id: str, stale_seconds: float) -> int | None:
    """The node rank this worker now holds, or None (the job is not waiting, or every rank is held)."""
    if session.scalar(select(Job.state).where(Job.id == job_id)) not in WAITING:
        return None
    free = or_(JobNode.worker_id.is_(None), JobNode.heartbeat_at < _cutoff(session, stale_seconds))
    ranks = session.scalars(select(JobNode.node_rank).where(JobNode.job_id == job_id).order_by(JobNode.node_rank)).all()
    for rank in ranks:
        query = update(JobNode).where(JobNode.job_id == job_id, JobNode.node_rank == rank, free)
        if session.execute(query.values(worker_id=worker_id, heartbeat_at=db_now(session))
                           .execution_options(synchronize_session=False)).rowcount == 1:
            return rank
    return None


def hold(session: Session, job_id: str, worker_id: str) -> bool:
    """Renew this worker's node claim; False when it no longer holds one."""
    query = update(JobNode).where(JobNode.job_id == job_id, JobNode.worker_id == worker_id)
    return session.execute(query.values(heartbeat_at=db_now(session)).execution_options(synchronize_session=False)).rowcount > 0


def release_node(session: Session, job_id: str, worker_id: str) -> None:
    query = update(JobNode).where(JobNode.job_id == job_id, JobNode.worker_id == worker_id)
    session.execute(query.values(worker_id=None, heartbeat_at=None).execution_options(synchronize_session=False))


def held(session: Session, job_id: str, stale_seconds: float) -> int:
    """How many of the job's node ranks are held by a live worker."""
    return session.scalar(select(func.count()).select_from(JobNode).where(
        JobNode.job_id == job_id, JobNode.worker_id.is_not(None), JobNode.heartbeat_at >= _cutoff(session, stale_seconds)))


def publish_rendezvous(session: Session, job_id: str, endpoint: str | None) -> None:
    session.execute(update(Job).where(Job.id == job_id).values(rendezvous=endpoint)
                    .execution_options(synchronize_session=False))
