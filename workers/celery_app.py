"""The worker's Celery app, configured from settings (the same config the API enqueues with)."""
from __future__ import annotations

from celery import Celery

from jobs.queue import celery_config
from jobs.settings import Settings


def create_celery(settings: Settings) -> Celery:
    app = Celery("darkmatter")
    app.conf.update(celery_config(settings))
    from workers import tasks

    tasks.register(app)
    return app
