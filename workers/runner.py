"""Run one job: claim it in the database, train/evaluate in a child process, hold the lease.

The DB row is the truth: a claim is a conditional UPDATE, so a redelivered message finds the job
taken and returns quietly. The child records metrics, checkpoints, scores and the final state;
the parent only heartbeats, and gives the job back if the child dies without finishing it.

A job of several devices runs its child as a standalone torchrun launch (workers/launch.py); the
parent's heartbeat covers the whole process group. A job of several nodes runs on the Ray cluster
(workers/ray_run.py): the child is the Ray Train driver, and placing, watching and restarting the
processes on the cluster is Ray's job; this worker still owns the job (lease, fencing, cancel)."""
from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import threading
import time
import uuid

from sqlalchemy import select, text

from jobs import datasets, lifecycle, retention
from jobs.db import retrying, session_scope
from jobs.queue import enqueue, enqueue_scan
from jobs.settings import Settings, get_settings
from jobs.storage import store_for
from jobs.tables import Job
from workers import launch, memory

log = logging.getLogger(__name__)
EXIT_REASONS = {4: "a process of the group died (the group was torn down)",
                5: "a transient infrastructure error (database, storage or network; see the events)"}
_stop = threading.Event()  # set on worker shutdown: children are stopped and their jobs released


def new_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


def child_env(settings: Settings, files: launch.RunFiles | None = None) -> dict[str, str]:
    env = dict(os.environ)
    for field in ("home", "database_url", "broker_url", "broker_key_prefix", "result_backend", "storage_url", "device",
                  "data_roots", "auth"):
        env[f"DARKMATTER_{field.upper()}"] = str(getattr(settings, field))
    env["DARKMATTER_DATASET_SOURCES"] = json.dumps(settings.dataset_sources)  # children re-check what they open
    if files is not None:
        env["DARKMATTER_PROGRESS_FILE"], env["DARKMATTER_OUTCOME_DIR"] = str(files.progress), str(files.outcomes)
    return env


def run_job(job_id: str, settings: Settings | None = None) -> str:
    settings = settings or get_settings()
    worker_id = new_worker_id()
    with session_scope(settings.database_url) as session:
        job = session.get(Job, job_id)
        nodes, devices, queue = (job.nodes, job.devices, job.queue) if job is not None else (1, 1, None)
    owned = owned_gpus()
    if nodes == 1 and owned and devices > len(owned):
        return _pass_on(settings, job_id, queue, f"worker {worker_id} owns {len(owned)} GPUs; the job needs {devices}")
    with session_scope(settings.database_url) as session:
        if not lifecycle.claim(session, job_id, worker_id):
            log.info("job %s is not claimable (taken or finished); skipping", job_id)
            return "skipped"
    log.info("job %s claimed by %s", job_id, worker_id)
    files = launch.RunFiles(settings, job_id)
    try:
        child = launch.start(launch.command(job_id, worker_id, nodes=nodes, devices=devices), child_env(settings, files))
        outcome = supervise(settings, job_id, worker_id, child, files)
    finally:
        files.remove()
    log.info("job %s: %s", job_id, outcome)
    return outcome


def owned_gpus() -> list[str]:
    """The GPUs this worker owns (workers/__main__.py sets CUDA_VISIBLE_DEVICES to them)."""
    return [g for g in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if g.strip()]


def _pass_on(settings: Settings, job_id: str, queue: str, reason: str) -> str:
    """Leave a job this worker cannot run unclaimed, and ring its doorbell again for the other
    workers of the queue (after a pause, so that a queue of small workers does not spin)."""
    with session_scope(settings.database_url) as session:
        if session.scalar(select(Job.state).where(Job.id == job_id)) not in lifecycle.WAITING:
            return "skipped"
        lifecycle.log_event(session, job_id, "log", f"passed on: {reason}")
    time.sleep(settings.heartbeat_interval)
    enqueue(settings, job_id, queue)
    return "passed-on"


def supervise(settings: Settings, job_id: str, worker_id: str, child: subprocess.Popen, files: launch.RunFiles) -> str:
    """Hold the lease while the child runs; a child that makes no progress for watchdog_seconds
    (a stalled read, a CUDA hang, SIGSTOP) is killed and the job given back."""
    reason, retry = None, True
    cap, oom_before = memory.child_cap(settings.child_memory_bytes), memory.oom_kills()
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
        used = memory.tree_rss(child.pid) if cap else 0
        if cap and used > cap:
            log.warning("job %s: the training process holds %d bytes (cap %d); killing it", job_id, used, cap)
            child.kill()
            code = child.wait()
            reason = (f"the training process used {used / 2**30:.2f} GiB of memory, over the limit of "
                      f"{cap / 2**30:.2f} GiB (DARKMATTER_CHILD_MEMORY_BYTES), and was killed; not retried, "
                      "as it would only run out again: use a smaller batch, model or dataset")
            retry = False
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
    code, recorded = files.outcome(code)
    if recorded is not None:
        return _record(settings, job_id, worker_id, recorded)
    # SIGKILL, or a torchrun group torn down after a rank's death, while the cgroup counted an OOM kill
    if code in (-9, 4) and reason is None and oom_before is not None and (memory.oom_kills() or 0) > oom_before:
        reason = ("the training process was killed by the kernel's out-of-memory killer; not retried, as it "
                  "would only run out again: use a smaller batch, model or dataset")
        retry = False
    return _after_child(settings, job_id, worker_id, code, reason, retry)


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


def _after_child(settings: Settings, job_id: str, worker_id: str, code: int, reason: str | None = None,
                 retry: bool = True) -> str:
    """The child ends the job itself when it can; anything else (a crash, a kill, a transient
    infrastructure error) is a lost attempt, except a graceful shutdown, which spends none. With
    retry False (killed for memory) the job fails now, or ends cancelled if a cancel came first."""
    shutting_down = _stop.is_set() and reason is None
    if reason is None:
        reason = "worker shutting down" if shutting_down else EXIT_REASONS.get(
            code, f"training process exited with code {code}")

    def settle():
        with session_scope(settings.database_url) as session:
            job = session.get(Job, job_id)
            if job is None or job.worker_id != worker_id or job.state in lifecycle.TERMINAL:
                return job.state if job else "missing", None
            if not retry:
                for state, before in ((lifecycle.CANCELLED, (lifecycle.CANCELLING,)), (lifecycle.FAILED, (lifecycle.RUNNING,))):
                    if lifecycle.finish(session, job_id, worker_id, state, error=reason, from_states=before):
                        return state, job.queue
                return None, None
            new_state = lifecycle.release(session, job_id, worker_id, reason, spend_attempt=not shutting_down)
            return new_state, job.queue

    state, queue = retrying(settle)
    if state == lifecycle.RETRYING:
        enqueue(settings, job_id, queue)  # resumed from its last checkpoint
    return state or "released"


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
            queues = {job_id: session.get(Job, job_id).queue for job_id in requeue}
        for job_id, queue in queues.items():
            log.warning("job %s lost its worker; re-enqueued", job_id)
            enqueue(settings, job_id, queue)
    if settings.scan_seconds:
        with session_scope(settings.database_url) as session:
            for dataset_id in datasets.expire_scans(session, settings.scan_seconds + 60):
                log.warning("dataset %s: its scan outlived DARKMATTER_SCAN_SECONDS; marked invalid", dataset_id)
    with session_scope(settings.database_url) as session:
        scans = datasets.scans_due(session, settings.requeue_after)
    for dataset_id in scans:
        log.warning("dataset %s has been pending for %.0fs; ringing its scan again", dataset_id, settings.requeue_after)
        enqueue_scan(settings, dataset_id)
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
