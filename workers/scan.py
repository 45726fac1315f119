"""Scan a pending dataset on a worker: validate, describe, hash, prepare arrays; the row ends
`ready` or `invalid`. Only a `pending` row is scanned, so a redelivered message is harmless."""
from __future__ import annotations

import logging

from jobs import datasets
from jobs.db import session_scope
from jobs.settings import Settings, get_settings
from jobs.storage import store_for
from jobs.tables import Dataset

log = logging.getLogger(__name__)


def run_scan(dataset_id: str, settings: Settings | None = None) -> str:
    settings = settings or get_settings()
    store = store_for(settings)
    with session_scope(settings.database_url) as session:
        dataset = session.get(Dataset, dataset_id)
        if dataset is None or dataset.state != "pending":
            log.info("dataset %s is not pending; skipping its scan", dataset_id)
            return "skipped"
    datasets.scan(settings, store, dataset)  # outside any transaction: a scan can take minutes
    with session_scope(settings.database_url) as session:
        session.merge(dataset)
    log.info("dataset %s scanned: %s", dataset_id, dataset.state)
    return dataset.state
