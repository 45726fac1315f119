"""Celery tasks: a few lines that take a job (or dataset) id and hand it to the runner (or scanner)."""
from __future__ import annotations

from celery import Celery
from celery.exceptions import Reject

from jobs.logs import job_scope
from jobs.queue import SCAN_TASK_NAME, TASK_NAME


def register(app: Celery) -> None:
    @app.task(name=TASK_NAME, acks_late=True, reject_on_worker_lost=True)
    def run_job(job_id: str) -> str:
        from workers import runner

        if runner.stopping():  # a message taken during shutdown goes back for another worker
            raise Reject("worker shutting down", requeue=True)
        with job_scope(job_id):
            return runner.run_job(job_id)

    @app.task(name=SCAN_TASK_NAME, acks_late=True, reject_on_worker_lost=True)
    def scan_dataset(dataset_id: str) -> str:
        from workers.scan import run_scan

        return run_scan(dataset_id)
