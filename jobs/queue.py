"""The broker is only a doorbell: enqueue a job id on its queue (Celery app created lazily)."""
from __future__ import annotations

import logging
from functools import lru_cache

from celery import Celery

from jobs.settings import Settings

log = logging.getLogger(__name__)
TASK_NAME = "darkmatter.run_job"
SCAN_TASK_NAME = "darkmatter.scan_dataset"


def transport_options(broker_url: str, key_prefix: str = "") -> dict:
    if broker_url.startswith("sqla+"):  # kombu passes these to create_engine
        return {"connect_args": {"timeout": 30}}
    # Redis: a message not acked within the visibility timeout is redelivered; the DB claim makes
    # that harmless, and long jobs keep their lease by heartbeat, not by the broker.
    options = {"visibility_timeout": 3600}
    if key_prefix and broker_url.startswith(("redis://", "rediss://")):
        options["global_keyprefix"] = key_prefix  # several deployments (or test runs) on one Redis
    return options


def celery_config(settings: Settings) -> dict:
    return {
        "broker_url": settings.broker_url,
        "result_backend": settings.result_backend,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "task_default_queue": settings.default_queue,
        "broker_connection_retry_on_startup": True,
        "broker_transport_options": transport_options(settings.broker_url, settings.broker_key_prefix),
        "task_ignore_result": True,
        "worker_hijack_root_logger": False,
    }


@lru_cache(maxsize=8)
def _celery(broker_url: str, result_backend: str, default_queue: str, broker_key_prefix: str) -> Celery:
    settings = Settings(broker_url=broker_url, result_backend=result_backend, default_queue=default_queue,
                        broker_key_prefix=broker_key_prefix)
    app = Celery("darkmatter")
    app.conf.update(celery_config(settings))
    return app


def celery_for(settings: Settings) -> Celery:
    return _celery(settings.broker_url, settings.result_backend, settings.default_queue, settings.broker_key_prefix)


def enqueue(settings: Settings, job_id: str, queue: str) -> bool:
    """Ring the doorbell. A failure is logged, not raised: the row stays queued and the sweeper
    rings again."""
    try:
        celery_for(settings).send_task(TASK_NAME, args=[job_id], queue=queue)
        return True
    except Exception:
        log.exception("could not enqueue %s on %s", job_id, queue)
        return False


def enqueue_scan(settings: Settings, dataset_id: str) -> bool:
    """Ask a worker to scan a pending dataset (on the default queue). Logged, not raised, on failure."""
    try:
        celery_for(settings).send_task(SCAN_TASK_NAME, args=[dataset_id], queue=settings.default_queue)
        return True
    except Exception:
        log.exception("could not enqueue the scan of %s", dataset_id)
        return False
