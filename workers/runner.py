"""Run one job: claim it in the database, train/evaluate in a child process, hold the lease.

The DB row is the truth: a claim is a conditional UPDATE, so a redelivered message finds the job
taken and returns quietly. The child records metrics, checkpoints, scores and the final state;
the parent only heartbeats, and gives the job back if the child dies without finishing it.

A job of several devices runs its child as a torchrun launch (workers/launch.py); the parent's
heartbeat covers the whole process group. A job of several nodes is gang-scheduled (jobs/gang.py):
each worker claims a node rank, node 0's worker takes the lease once all ranks are held, and
every node's torchrun joins the rendezvous node 0 published on the job row."""
from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import threading
import time
import uuid
from pathlib import Path

from sqlalchemy import text

from jobs import datasets, gang, lifecycle, retention
from jobs.db import retrying, session_scope
from jobs.queue import enqueue, enqueue_scan
from jobs.settings import Settings, get_settings
from jobs.storage import store_for
from jobs.tables import Job
from workers import launch

log = logging.getLogger(__name__)
UNRECORDED = 6  # workers.child: finished, but could not write the final state (see RunFiles.result)
EXIT_REASONS = {4: "a process of the group died (the group was torn down)",
                5: "a transient infrastructure error (database, storage or network; see the events)"}
_stop = threading.Event()  # set on worker shutdown: children are stopped and their jobs released


def new_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


def child_env(settings: Settings, files: "RunFiles | None" = None) -> dict[str, str]:
    env = dict(os.environ)
    for field in ("home", "database_url", "broker_url", "broker_key_prefix", "result_backend", "storage_url", "device"):
        env[f"DARKMATTER_{field.upper()}"] = str(getattr(settings, field))
    if files is not None:
        env["DARKMATTER_PROGRESS_FILE"], env["DARKMATTER_RESULT_FILE"] = str(files.progress), str(files.result)
    return env


class RunFiles:
    """Two local files between a worker and its child: `progress`, whose mtime the child renews
    while it makes progress (the watchdog reads it), and `result`, where a child that finished but
    could not record it leaves its final state for the worker to record."""

    def __init__(self, settings: Settings, job_id: str, worker_id: str):
        folder = Path(settings.home) / "runs"
        folder.mkdir(parents=True, exist_ok=True)
        stem = f"{job_id}-{uuid.uuid4().hex[:8]}"
        self.progress, self.result = folder / f"{stem}.progress", folder / f"{stem}.result.json"
        self.progress.touch()
        os.utime(self.progress, (0, 0))  # the child's first beat arms the watchdog (start-up is not timed)

    def idle_seconds(self) -> float:
        """Seconds since the child's last beat; 0 before its first."""
        try:
            mtime = self.progress.stat().st_mtime
        except OSError:
            return 0.0
        return 0.0 if mtime == 0 else time.time() - mtime

    def recorded(self) -> dict | None:
        try:
            return json.loads(self.result.read_text())
        except (OSError, ValueError):
            return None

    def remove(self) -> None:
        for path in (self.progress, self.result):
            path.unlink(missing_ok=True)


def run_job(job_id: str, settings: Settings | None = None) -> str:
    settings = settings or get_settings()
    worker_id = new_worker_id()
    with session_scope(settings.database_url) as session:
        job = session.get(Job, job_id)
        nodes, devices = (job.nodes, job.devices) if job is not None else (1, 1)
    if nodes > 1:
        return run_gang(settings, job_id, worker_id, nodes, devices)
    with session_scope(settings.database_url) as session:
        if not lifecycle.claim(session, job_id, worker_id):
            log.info("job %s is not claimable (taken or finished); skipping", job_id)
            return "skipped"
    log.info("job %s claimed by %s", job_id, worker_id)
    files = RunFiles(settings, job_id, worker_id)
    try:
        child = launch.start(launch.command(job_id, worker_id, devices=devices), child_env(settings, files))
        outcome = supervise(settings, job_id, worker_id, child, files)
    finally:
        files.remove()
    log.info("job %s: %s", job_id, outcome)
    return outcome


def run_gang(settings: Settings, job_id: str, worker_id: str, nodes: int, devices: int) -> str:
    """One node of a multi-node job: claim a node rank, wait (at most gang_timeout) until every
    rank is held, then run this node's torchrun. Node 0's worker holds the job's lease."""
    def db(fn):
        def attempt():
            with session_scope(settings.database_url) as session:
                return fn(session)
        return retrying(attempt)

    rank = db(lambda s: gang.claim_node(s, job_id, worker_id, settings.heartbeat_timeout))
    if rank is None:
        log.info("job %s: no node rank to claim (taken, or the job is not waiting); skipping", job_id)
        return "skipped"
    if rank == 0:
        host = settings.advertise_host or socket.gethostname()
        endpoint = f"{host}:{settings.rendezvous_port or launch.free_port()}"
        db(lambda s: gang.publish_rendezvous(s, job_id, endpoint))
    db(lambda s: lifecycle.log_event(s, job_id, "log", f"node {rank} of {nodes} claimed by {worker_id}"))
    deadline = time.monotonic() + settings.gang_timeout
    while True:
        if not db(lambda s: gang.hold(s, job_id, worker_id)):
            return "node-lost"
        job = db(lambda s: s.get(Job, job_id))
        if job.state in lifecycle.TERMINAL:
            db(lambda s: gang.release_node(s, job_id, worker_id))
            return job.state
        if rank == 0 and job.state in lifecycle.WAITING and db(lambda s: gang.held(s, job_id, settings.heartbeat_timeout)) == nodes:
            if db(lambda s: lifecycle.claim(s, job_id, worker_id)):
                job = db(lambda s: s.get(Job, job_id))
                break
        if rank > 0 and job.state in lifecycle.ACTIVE and job.rendezvous:
            break
        if time.monotonic() > deadline or _stop.is_set():
            return _give_back_node(settings, job_id, worker_id, rank, job.queue, db)
        time.sleep(min(0.5, settings.heartbeat_interval))
    lease_id, attempt = job.worker_id, job.attempt
    log.info("job %s: node %d of %d starting (lease %s, attempt %d)", job_id, rank, nodes, lease_id, attempt)
    cmd = launch.command(job_id, lease_id, nodes=nodes, devices=devices, rendezvous=job.rendezvous, node_rank=rank,
                         attempt=attempt, join_timeout=settings.gang_timeout)
    files = RunFiles(settings, job_id, worker_id)
    try:
        child = launch.start(cmd, child_env(settings, files))
        if rank == 0:
            outcome = supervise(settings, job_id, worker_id, child, files)
        else:
            outcome = supervise_node(settings, job_id, worker_id, lease_id, attempt, child)
    finally:
        files.remove()
    db(lambda s: gang.release_node(s, job_id, worker_id))
    log.info("job %s: node %d: %s", job_id, rank, outcome)
    return outcome


def _give_back_node(settings: Settings, job_id: str, worker_id: str, rank: int, queue: str, db) -> str:
    """Waited too long for the other nodes: free the rank (and the devices) and ring the doorbell
    again, so that this or another worker tries later, after the messages queued behind it."""
    def give_back(session):
        gang.release_node(session, job_id, worker_id)
        if rank == 0:
            gang.publish_rendezvous(session, job_id, None)
        lifecycle.log_event(session, job_id, "log", f"node {rank} given back by {worker_id}: the other nodes "
                                                    f"did not arrive within {settings.gang_timeout:.0f}s")

    db(give_back)
    enqueue(settings, job_id, queue)
    return "waiting"


def supervise_node(settings: Settings, job_id: str, worker_id: str, lease_id: str, attempt: int,
                   child: subprocess.Popen) -> str:
    """A node other than 0: hold the node claim while the child runs; stop the child when the
    job leaves this attempt (finished, retried or taken by another lease)."""
    while True:
        try:
            return f"child exited with code {child.wait(timeout=settings.heartbeat_interval)}"
        except subprocess.TimeoutExpired:
            pass
        if _stop.is_set():
            child.terminate()
            return f"child stopped on shutdown (code {child.wait()})"
        try:
            with session_scope(settings.database_url) as session:
                gang.hold(session, job_id, worker_id)
                job = session.get(Job, job_id)
                current = job is not None and job.state in lifecycle.ACTIVE and job.worker_id == lease_id \
                    and job.attempt == attempt
                ended = job is None or job.state in lifecycle.TERMINAL
        except Exception:
            log.warning("node heartbeat for %s failed; will retry", job_id, exc_info=True)
            continue
        if not current:
            if ended:  # done: let torchrun pass its exit barrier with node 0's agent rather than kill it
                try:
                    return f"job ended; child exited with code {child.wait(timeout=max(30.0, settings.gang_timeout))}"
                except subprocess.TimeoutExpired:
                    pass
            child.kill()
            child.wait()
            return "attempt-ended"


def supervise(settings: Settings, job_id: str, worker_id: str, child: subprocess.Popen, files: RunFiles) -> str:
    """Hold the lease while the child runs; a child that makes no progress for watchdog_seconds
    (a stalled read, a CUDA hang, SIGSTOP) is killed and the job given back."""
    reason = None
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
        idle = files.idle_seconds()
        if settings.watchdog_seconds and idle > settings.watchdog_seconds:
            log.warning("job %s: no progress for %.0fs; killing the training process", job_id, idle)
            child.kill()
            code = child.wait()
            reason = f"the training process made no progress for {idle:.0f}s (watchdog) and was killed"
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
    if code == UNRECORDED and (recorded := files.recorded()) is not None:
        return _record(settings, job_id, worker_id, recorded)
    return _after_child(settings, job_id, worker_id, code, reason)


def _record(settings: Settings, job_id: str, worker_id: str, recorded: dict) -> str:
    """The child finished but could not write the final state: write it here, waiting out the
    database rather than rerunning a finished job (a second final checkpoint, duplicate scores)."""
    def settle():
        with session_scope(settings.database_url) as session:
            lifecycle.finish(session, job_id, worker_id, recorded["state"], error=recorded.get("error"),
                             result=recorded.get("result"))
            return session.get(Job, job_id).state

    return retrying(settle, attempts=60, delay=1.0)


def _finished(settings: Settings, job_id: str) -> bool:
    with session_scope(settings.database_url) as session:
        job = session.get(Job, job_id)
        return job is None or job.state in lifecycle.TERMINAL


def _beat(settings: Settings, job_id: str, worker_id: str) -> str | None:
    with session_scope(settings.database_url) as session:
        return lifecycle.heartbeat(session, job_id, worker_id)


def _after_child(settings: Settings, job_id: str, worker_id: str, code: int, reason: str | None = None) -> str:
    """The child ends the job itself when it can; anything else (a crash, a kill, a transient
    infrastructure error) is a lost attempt, except a graceful shutdown, which spends none."""
    shutting_down = _stop.is_set() and reason is None
    if reason is None:
        reason = "worker shutting down" if shutting_down else EXIT_REASONS.get(
            code, f"training process exited with code {code}")

    def settle():
        with session_scope(settings.database_url) as session:
            job = session.get(Job, job_id)
            if job is None or job.worker_id != worker_id or job.state in lifecycle.TERMINAL:
                return job.state if job else "missing", None
            new_state = lifecycle.release(session, job_id, worker_id, reason, spend_attempt=not shutting_down)
            return new_state, job.queue

    state, queue = retrying(settle)
    if state == lifecycle.RETRYING:
        enqueue(settings, job_id, queue, copies=_nodes(settings, job_id))  # resumed from its last checkpoint
    return state or "released"


def _nodes(settings: Settings, job_id: str) -> int:
    with session_scope(settings.database_url) as session:
        job = session.get(Job, job_id)
        return job.nodes if job is not None else 1


_db_up_since: float | None = None  # this process's view of the database: reachable since (monotonic)


def sweep_once(settings: Settings) -> list[str]:
    """Re-queue jobs whose worker stopped heartbeating. Safe in any number of processes.

    Leases are judged stale only once this sweeper has reached the database for a whole
    heartbeat_timeout: after an outage every owner gets that long to renew its lease before
    anyone takes it for dead."""
    global _db_up_since
    try:
        with session_scope(settings.database_url) as session:
            session.execute(text("select 1"))
    except Exception:
        _db_up_since = None
        raise
    if _db_up_since is None:
        _db_up_since = time.monotonic()
    requeue = []
    if time.monotonic() - _db_up_since >= settings.heartbeat_timeout:
        with session_scope(settings.database_url) as session:
            requeue = lifecycle.sweep_stale(session, settings.heartbeat_timeout)
            queues = {job_id: (session.get(Job, job_id).queue, session.get(Job, job_id).nodes) for job_id in requeue}
        for job_id, (queue, nodes) in queues.items():
            log.warning("job %s lost its worker; re-enqueued", job_id)
            enqueue(settings, job_id, queue, copies=nodes)
    with session_scope(settings.database_url) as session:
        scans = datasets.scans_due(session, settings.requeue_after)
    for dataset_id in scans:
        log.warning("dataset %s has been pending for %.0fs; ringing its scan again", dataset_id, settings.requeue_after)
        enqueue_scan(settings, dataset_id)
    with session_scope(settings.database_url) as session:
        due = lifecycle.doorbells_due(session, settings.requeue_after)
    for job_id, queue in due:  # duplicates are harmless: only one claim succeeds
        log.warning("job %s has waited %.0fs since its last doorbell; ringing again", job_id, settings.requeue_after)
        enqueue(settings, job_id, queue, copies=_nodes(settings, job_id))
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
