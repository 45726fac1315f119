"""What a running job's child process needs: settings, device, DB writes, cancel checks."""
from __future__ import annotations

import os
import time

import torch
from sqlalchemy import update

from jobs import lifecycle
from jobs.db import retrying, session_scope
from jobs.settings import Settings
from jobs.storage import store_for
from jobs.tables import Job, Metric


def pick_device(requested: str) -> torch.device:
    """The device to train on. Under torchrun each process takes the GPU of its LOCAL_RANK
    (the worker's --gpus, renumbered from 0 by CUDA_VISIBLE_DEVICES)."""
    if requested == "auto":
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device {requested} requested but no CUDA device is visible to this worker")
    if requested.startswith("cuda") and "LOCAL_RANK" in os.environ:
        local = int(os.environ["LOCAL_RANK"])
        if local >= torch.cuda.device_count():
            raise RuntimeError(f"process {local} has no GPU: this worker owns {torch.cuda.device_count()} "
                               "(give it more with --gpus, or ask for fewer devices)")
        torch.cuda.set_device(local)
        return torch.device("cuda", local)
    return torch.device(requested)


class JobContext:
    """A child's view of its job. Every write is fenced by the lease (worker_id, attempt): once
    the job has moved on, `write` raises lifecycle.LeaseLost and nothing is written. `rank` > 0:
    a non-zero rank of a distributed job, which reads but never writes the job's rows (events,
    metrics and compute are rank 0's). Each DB round trip and each `beat` tells the parent's
    watchdog (through the mtime of DARKMATTER_PROGRESS_FILE) that the child is making progress."""

    def __init__(self, settings: Settings, job_id: str, worker_id: str, rank: int = 0, attempt: int | None = None):
        self.settings, self.job_id, self.worker_id, self.rank = settings, job_id, worker_id, rank
        self.attempt = attempt
        self.store = store_for(settings)
        self.shutdown = False
        self._last_poll, self._last_state = 0.0, lifecycle.RUNNING
        self.progress_file = os.environ.get("DARKMATTER_PROGRESS_FILE")
        self._last_beat = 0.0

    def session(self):
        return session_scope(self.settings.database_url)

    def read(self, fn):
        """Run fn(session) without the lease, retrying while the database is unreachable."""
        def attempt():
            with self.session() as session:
                return fn(session)

        result = retrying(attempt, attempts=20)
        self.beat()
        return result

    def write(self, fn):
        """Run fn(session) in one transaction that first takes the lease (lifecycle.fence),
        retrying while the database is unreachable (about 100 s of backoff)."""
        def attempt():
            with self.session() as session:
                if self.attempt is not None:
                    lifecycle.fence(session, self.job_id, self.worker_id, self.attempt)
                return fn(session)

        result = retrying(attempt, attempts=20)
        self.beat()
        return result

    def with_storage_retries(self, fn, tries: int = 4, delay: float = 1.0):
        """fn() that writes artifacts (a checkpoint's files): a storage error (S3/MinIO down, a
        network blip) is retried with backoff, then raised (the job is retried)."""
        for attempt in range(tries):
            try:
                result = fn()
                self.beat()
                return result
            except OSError:
                if attempt == tries - 1:
                    raise
                self.event("log", f"storage error while committing; retrying in {delay * 2 ** attempt:.0f}s")
                time.sleep(delay * 2 ** attempt)

    def beat(self) -> None:
        """Progress for the parent's watchdog, at most once a second."""
        now = time.monotonic()
        if self.progress_file and now - self._last_beat >= 1.0:
            self._last_beat = now
            try:
                os.utime(self.progress_file)
            except OSError:
                pass

    def request_shutdown(self) -> None:
        self.shutdown = True

    def stop_reason(self) -> str | None:
        """'cancelled', 'shutdown', 'lease-lost' or None; polls the DB at most every cancel_poll_seconds."""
        if self.shutdown:
            return "shutdown"
        self.beat()
        now = time.monotonic()
        if now - self._last_poll >= self.settings.cancel_poll_seconds:
            self._last_poll = now
            job = self.read(lambda s: s.get(Job, self.job_id))
            if job.worker_id != self.worker_id or job.state not in lifecycle.ACTIVE or (
                    self.attempt is not None and job.attempt != self.attempt):
                return "lease-lost"
            self._last_state = job.state
        return "cancelled" if self._last_state == lifecycle.CANCELLING else None

    def log_metrics(self, step: int, logs: dict[str, float], progress_total: int) -> None:
        def write(session):
            session.add_all(Metric(job_id=self.job_id, step=step, name=k, value=float(v)) for k, v in logs.items())
            session.execute(update(Job).where(Job.id == self.job_id).values(step=step, total_steps=progress_total))

        self.write(write)

    def event(self, kind: str, message: str, **data) -> None:
        if self.rank != 0:
            return
        self.write(lambda s: lifecycle.log_event(s, self.job_id, kind, message, **data))

    def add_compute(self, seconds: float) -> None:
        if self.rank != 0:
            return
        self.write(lambda s: s.execute(update(Job).where(Job.id == self.job_id)
                                       .values(compute_seconds=Job.compute_seconds + seconds)))
