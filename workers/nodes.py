"""One node of a multi-node job (jobs/gang.py): claim a node rank, wait for the others, run this
node's torchrun, and hold the node claim while it runs. Node 0's worker holds the job's lease."""
from __future__ import annotations

import logging
import socket
import subprocess
import time

from jobs import gang, lifecycle
from jobs.db import retrying, session_scope
from jobs.queue import enqueue
from jobs.settings import Settings
from jobs.tables import Job
from workers import launch, runner

log = logging.getLogger(__name__)


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
        if time.monotonic() > deadline or runner.stopping():
            return _give_back_node(settings, job_id, worker_id, rank, job.queue, db)
        time.sleep(min(0.5, settings.heartbeat_interval))
    lease_id, attempt = job.worker_id, job.attempt
    log.info("job %s: node %d of %d starting (lease %s, attempt %d)", job_id, rank, nodes, lease_id, attempt)
    cmd = launch.command(job_id, lease_id, nodes=nodes, devices=devices, rendezvous=job.rendezvous, node_rank=rank,
                         attempt=attempt, join_timeout=settings.gang_timeout)
    files = launch.RunFiles(settings, job_id)
    try:
        child = launch.start(cmd, runner.child_env(settings, files))
        if rank == 0:
            outcome = runner.supervise(settings, job_id, worker_id, child, files)
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
        if runner.stopping():
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
