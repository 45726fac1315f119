"""Run one job: claim it in the database, train/evaluate in a child process, hold the lease.

The DB row is the truth: a claim is a conditional UPDATE, so a redelivered message finds the job
taken and returns quietly. The child records metrics, checkpoints, scores and the final state;
the parent only heartbeats, and gives the job back if the child dies without finishing it."""
from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import threading
import uuid

from jobs import lifecycle, retention
from jobs.db import retrying, session_scope
from jobs.queue import enqueue
from jobs.settings import Settings, get_settings
from jobs.storage import store_for
from jobs.tables import Job

log = logging.getLogger(__name__)
_stop = threading.Event()  # set on worker shutdown: children are stopped and their jobs released


def new_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


def child_env(settings: Settings) -> dict[str, str]:
    env = dict(os.environ)
    for field in ("home", "database_url", "broker_url", "broker_key_prefix", "result_backend", "storage_url", "device"):
        env[f"DARKMATTER_{field.upper()}"] = str(getattr(settings, field))
    return env


def run_job(job_id: str, settings: Settings | None = None) -> str:
    settings = settings or get_settings()
    worker_id = new_worker_id()
    with session_scope(settings.database_url) as session:
        if not lifecycle.claim(session, job_id, worker_id):
            log.info("job %s is not claimable (taken or finished); skipping", job_id)
            return "skipped"
    log.info("job %s claimed by %s", job_id, worker_id)
    child = subprocess.Popen([sys.executable, "-m", "workers.child", job_id, worker_id], env=child_env(settings))
    outcome = supervise(settings, job_id, worker_id, child)
    log.info("job %s: %s", job_id, outcome)
    return outcome


def supervise(settings: Settings, job_id: str, worker_id: str, child: subprocess.Popen) -> str:
    while True:
        try:
            code = child.wait(timeout=settings.heartbeat_interval)
            break
        except subprocess.TimeoutExpired:
            pass
        if _stop.is_set():
            child.terminate()  # the child checkpoints on SIGTERM and exits
            code = child.wait()
            break
        try:
            state = retrying(lambda: _beat(settings, job_id, worker_id), attempts=3)
        except Exception:
            log.warning("heartbeat for %s failed; will retry", job_id, exc_info=True)
            continue
        if state is None:  # not running under our lease: finished by the child, or swept as stale
            if _finished(settings, job_id):
                code = child.wait()
                break
            child.kill()
            child.wait()
            return "lease-lost"
    return _after_child(settings, job_id, worker_id, code)


def _finished(settings: Settings, job_id: str) -> bool:
    with session_scope(settings.database_url) as session:
        job = session.get(Job, job_id)
        return job is None or job.state in lifecycle.TERMINAL


def _beat(settings: Settings, job_id: str, worker_id: str) -> str | None:
    with session_scope(settings.database_url) as session:
        return lifecycle.heartbeat(session, job_id, worker_id)


def _after_child(settings: Settings, job_id: str, worker_id: str, code: int) -> str:
    """The child ends the job itself when it can; anything else (a crash, a kill) is a lost attempt."""
    def settle():
        with session_scope(settings.database_url) as session:
            job = session.get(Job, job_id)
            if job is None or job.worker_id != worker_id or job.state in lifecycle.TERMINAL:
                return job.state if job else "missing", None
            reason = "worker shutting down" if _stop.is_set() else f"training process exited with code {code}"
            new_state = lifecycle.release(session, job_id, worker_id, reason)
            return new_state, job.queue

    state, queue = retrying(settle)
    if state == lifecycle.RETRYING:
        enqueue(settings, job_id, queue)  # any worker resumes it from its last checkpoint
    return state or "released"


def sweep_once(settings: Settings) -> list[str]:
    """Re-queue jobs whose worker stopped heartbeating. Safe in any number of processes."""
    with session_scope(settings.database_url) as session:
        requeue = lifecycle.sweep_stale(session, settings.heartbeat_timeout)
        queues = {job_id: session.get(Job, job_id).queue for job_id in requeue}
    for job_id, queue in queues.items():
        log.warning("job %s lost its worker; re-enqueued", job_id)
        enqueue(settings, job_id, queue)
    with session_scope(settings.database_url) as session:
        due = lifecycle.doorbells_due(session, settings.requeue_after)
    for job_id, queue in due:  # duplicates are harmless: only one claim succeeds
        log.warning("job %s has waited %.0fs since its last doorbell; ringing again", job_id, settings.requeue_after)
        enqueue(settings, job_id, queue)
    return requeue


def collect_garbage(settings: Settings) -> list[str]:
    """Delete artifact files that no checkpoint row refers to (see jobs/retention.py)."""
    store = store_for(settings)
    with session_scope(settings.database_url) as session:
        return retention.collect_garbage(session, store, settings.gc_min_age)


def request_stop() -> None:
    _stop.set()


def stopping() -> bool:
    return _stop.is_set()
