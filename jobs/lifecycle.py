"""Job states and the only code that changes them: each transition is one conditional UPDATE.

queued -> running -> succeeded | failed | cancelled;  running -> cancelling -> cancelled;
running -> retrying (stale lease) -> running ... -> failed after max_attempts."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from jobs.tables import Job, JobEvent, utcnow

QUEUED, RUNNING, CANCELLING, RETRYING = "queued", "running", "cancelling", "retrying"
SUCCEEDED, FAILED, CANCELLED = "succeeded", "failed", "cancelled"
ACTIVE = (RUNNING, CANCELLING)
WAITING = (QUEUED, RETRYING)
TERMINAL = (SUCCEEDED, FAILED, CANCELLED)
STATES = (QUEUED, RUNNING, CANCELLING, RETRYING, SUCCEEDED, FAILED, CANCELLED)


def _event(session: Session, job_id: str, message: str, kind: str = "state", **data) -> None:
    session.add(JobEvent(job_id=job_id, kind=kind, message=message, data=data))


def _transition(session: Session, job_id: str, from_states: tuple[str, ...], values: dict, note: str,
                worker_id: str | None = None) -> bool:
    query = update(Job).where(Job.id == job_id, Job.state.in_(from_states))
    if worker_id is not None:
        query = query.where(Job.worker_id == worker_id)
    changed = session.execute(query.values(**values).execution_options(synchronize_session=False)).rowcount == 1
    if changed:
        _event(session, job_id, note, state=values.get("state"))
    return changed


def claim(session: Session, job_id: str, worker_id: str) -> bool:
    """queued/retrying -> running for this worker. False when another worker has it (or it ended)."""
    now = utcnow()
    values = {"state": RUNNING, "worker_id": worker_id, "heartbeat_at": now, "attempt": Job.attempt + 1}
    ok = _transition(session, job_id, WAITING, values, f"claimed by {worker_id}")
    if ok:
        session.execute(update(Job).where(Job.id == job_id, Job.started_at.is_(None)).values(started_at=now))
    return ok


def heartbeat(session: Session, job_id: str, worker_id: str) -> str | None:
    """Renew the lease; returns the job's state, or None when this worker no longer holds it."""
    result = session.execute(update(Job).where(Job.id == job_id, Job.worker_id == worker_id, Job.state.in_(ACTIVE))
                             .values(heartbeat_at=utcnow()))
    if result.rowcount != 1:
        return None
    return session.scalar(select(Job.state).where(Job.id == job_id))


def finish(session: Session, job_id: str, worker_id: str, state: str, error: str | None = None,
           result: dict | None = None) -> bool:
    if state not in TERMINAL:
        raise ValueError(f"{state} is not a terminal state")
    values = {"state": state, "finished_at": utcnow(), "error": error, "worker_id": None}
    if result is not None:
        values["result"] = result
    return _transition(session, job_id, ACTIVE, values, state + (f": {error}" if error else ""), worker_id)


def release(session: Session, job_id: str, worker_id: str, reason: str) -> str | None:
    """Give the job back (worker shutdown, lost child): retrying if attempts remain, else failed.
    Returns the new state, or None when this worker did not hold it."""
    job = session.get(Job, job_id)
    if job is None or job.worker_id != worker_id or job.state not in ACTIVE:
        return None
    if job.state == CANCELLING:
        ok = finish(session, job_id, worker_id, CANCELLED, error=reason)
        return CANCELLED if ok else None
    if job.attempt >= job.max_attempts:
        ok = finish(session, job_id, worker_id, FAILED, error=f"{reason} (after {job.attempt} attempts)")
        return FAILED if ok else None
    ok = _transition(session, job_id, ACTIVE, {"state": RETRYING, "worker_id": None, "heartbeat_at": utcnow()},
                     f"retrying: {reason}", worker_id)
    return RETRYING if ok else None


def request_cancel(session: Session, job_id: str) -> str | None:
    """A waiting job is cancelled at once; a running one goes to `cancelling` for the loop to see."""
    if _transition(session, job_id, WAITING, {"state": CANCELLED, "finished_at": utcnow()}, "cancelled while queued"):
        return CANCELLED
    if _transition(session, job_id, (RUNNING,), {"state": CANCELLING}, "cancel requested"):
        return CANCELLING
    return None


def sweep_stale(session: Session, timeout_seconds: float, now: datetime | None = None) -> list[str]:
    """Move jobs whose lease went stale to retrying (or failed after max_attempts).
    Safe to run in several processes at once: each move is conditional on the stale lease.
    Returns the ids now `retrying`, for the caller to re-enqueue."""
    now = now or datetime.now(timezone.utc)
    cutoff = now - timedelta(seconds=timeout_seconds)
    stale = session.execute(select(Job.id, Job.worker_id).where(Job.state.in_(ACTIVE), Job.heartbeat_at < cutoff)).all()
    requeue = []
    for job_id, worker_id in stale:
        still = session.scalar(select(Job.heartbeat_at).where(Job.id == job_id, Job.worker_id == worker_id))
        if still is None or _aware(still) >= cutoff:
            continue
        if release(session, job_id, worker_id, "worker lease expired (no heartbeat)") == RETRYING:
            requeue.append(job_id)
    return requeue


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def doorbells_due(session: Session, seconds: float, now: datetime | None = None) -> list[tuple[str, str]]:
    """(id, queue) of waiting jobs whose last doorbell is older than `seconds`: its message may
    have died with a killed worker (a broker drops what a worker took and never acked). Each is
    marked rung now, conditionally, so that of several sweepers only one rings it again.
    For a waiting job `heartbeat_at` holds its last doorbell (None: rung at creation)."""
    now = now or datetime.now(timezone.utc)
    cutoff = now - timedelta(seconds=seconds)
    last_rung = func.coalesce(Job.heartbeat_at, Job.created_at)
    due = session.execute(select(Job.id, Job.queue).where(Job.state.in_(WAITING), last_rung < cutoff)).all()
    rung = []
    for job_id, queue in due:
        query = update(Job).where(Job.id == job_id, Job.state.in_(WAITING), last_rung < cutoff)
        if session.execute(query.values(heartbeat_at=now).execution_options(synchronize_session=False)).rowcount == 1:
            rung.append((job_id, queue))
    return rung


def waiting_since(session: Session, seconds: float) -> list[tuple[str, str]]:
    """(id, queue) of jobs waiting longer than `seconds`: their doorbell may have been lost."""
    cutoff = datetime.now(timezone.utc) - timedelta(seconds=seconds)
    return [tuple(r) for r in session.execute(select(Job.id, Job.queue).where(Job.state.in_(WAITING), Job.created_at < cutoff))]


def log_event(session: Session, job_id: str, kind: str, message: str, **data) -> None:
    _event(session, job_id, message, kind, **data)
