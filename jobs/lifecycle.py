"""Job states and the only code that changes them: each transition is one conditional UPDATE.

queued -> running -> succeeded | failed | cancelled;  running -> cancelling -> cancelled;
running -> retrying (stale lease) -> running ... -> failed after max_attempts.

A lease is (worker_id, attempt) on the job row, renewed on the database's clock (jobs.db.db_now).
`fence` takes it inside a transaction: every write a training child makes goes through it, so
a child whose lease has moved on (swept, retried, taken by another worker) writes nothing."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from jobs.db import bounded_lock_wait, db_now
from jobs.tables import Job, JobEvent


class LeaseLost(RuntimeError):
    """The job is no longer running under this (worker, attempt): the write was refused."""

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
    now = db_now(session)
    values = {"state": RUNNING, "worker_id": worker_id, "heartbeat_at": now, "attempt": Job.attempt + 1}
    ok = _transition(session, job_id, WAITING, values, f"claimed by {worker_id}")
    if ok:
        session.execute(update(Job).where(Job.id == job_id, Job.started_at.is_(None)).values(started_at=now))
    return ok


def heartbeat(session: Session, job_id: str, worker_id: str) -> str | None:
    """Renew the lease; returns the job's state, or None when this worker no longer holds it."""
    bounded_lock_wait(session)
    result = session.execute(update(Job).where(Job.id == job_id, Job.worker_id == worker_id, Job.state.in_(ACTIVE))
                             .values(heartbeat_at=db_now(session)))
    if result.rowcount != 1:
        return None
    return session.scalar(select(Job.state).where(Job.id == job_id))


def finish(session: Session, job_id: str, worker_id: str, state: str, error: str | None = None,
           result: dict | None = None, from_states: tuple[str, ...] = ACTIVE) -> bool:
    if state not in TERMINAL:
        raise ValueError(f"{state} is not a terminal state")
    values = {"state": state, "finished_at": db_now(session), "error": error, "worker_id": None}
    if result is not None:
        values["result"] = result
        if isinstance(result.get("step"), int):  # where the run stopped (a cancel's checkpoint), not the last log
            values["step"] = result["step"]
    return _transition(session, job_id, from_states, values, state + (f": {error}" if error else ""), worker_id)


def fence(session: Session, job_id: str, worker_id: str, attempt: int) -> None:
    """Take the lease (worker, attempt) for the rest of this transaction, or raise LeaseLost. A
    no-op UPDATE: on PostgreSQL it locks the row (a concurrent release or claim waits for the
    commit), on SQLite it takes the write lock, so the check and the writes after it are atomic."""
    query = update(Job).where(Job.id == job_id, Job.worker_id == worker_id, Job.attempt == attempt,
                              Job.state.in_(ACTIVE)).values(worker_id=Job.worker_id)
    if session.execute(query.execution_options(synchronize_session=False)).rowcount != 1:
        raise LeaseLost(f"job {job_id} is no longer running under {worker_id}, attempt {attempt}")


def release(session: Session, job_id: str, worker_id: str, reason: str, spend_attempt: bool = True) -> str | None:
    """Give the job back (worker shutdown, lost child): retrying if attempts remain, else failed;
    a cancel requested meanwhile ends it cancelled. Each outcome is a conditional UPDATE on the
    state, so a cancel landing between the read and the write is never turned into a retry.
    `spend_attempt=False` (a graceful shutdown) gives the attempt back. Returns the new state, or
    None when this worker did not hold the job."""
    bounded_lock_wait(session)
    for _ in range(2):
        if finish(session, job_id, worker_id, CANCELLED, error=reason, from_states=(CANCELLING,)):
            return CANCELLED
        job = session.execute(select(Job.attempt, Job.max_attempts).where(
            Job.id == job_id, Job.worker_id == worker_id, Job.state == RUNNING)).first()
        if job is None:
            continue  # not running under this worker: cancelling now (try again), or not ours
        attempt, max_attempts = job
        if spend_attempt and attempt >= max_attempts:
            if finish(session, job_id, worker_id, FAILED, error=f"{reason} (after {attempt} attempts)",
                      from_states=(RUNNING,)):
                return FAILED
            continue
        values = {"state": RETRYING, "worker_id": None, "heartbeat_at": db_now(session)}
        if not spend_attempt:
            values["attempt"] = Job.attempt - 1
        if _transition(session, job_id, (RUNNING,), values, f"retrying: {reason}", worker_id):
            return RETRYING
    return None


def request_cancel(session: Session, job_id: str) -> str | None:
    """A waiting job is cancelled at once; a running one goes to `cancelling` for the loop to see."""
    if _transition(session, job_id, WAITING, {"state": CANCELLED, "finished_at": db_now(session)},
                   "cancelled while queued"):
        return CANCELLED
    if _transition(session, job_id, (RUNNING,), {"state": CANCELLING}, "cancel requested"):
        return CANCELLING
    return None


def sweep_stale(session: Session, timeout_seconds: float, now: datetime | None = None) -> list[str]:
    """Move jobs whose lease went stale to retrying (or failed after max_attempts).
    Safe to run in several processes at once: each move is conditional on the stale lease.
    Returns the ids now `retrying`, for the caller to re-enqueue."""
    bounded_lock_wait(session)
    now = now or db_now(session)
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
    now = now or db_now(session)
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
    cutoff = db_now(session) - timedelta(seconds=seconds)
    return [tuple(r) for r in session.execute(select(Job.id, Job.queue).where(Job.state.in_(WAITING), Job.created_at < cutoff))]


def log_event(session: Session, job_id: str, kind: str, message: str, **data) -> None:
    _event(session, job_id, message, kind, **data)
