"""Scan a pending dataset: validate, describe, hash, prepare arrays; the row ends `ready` or
`invalid`. Only a `pending` row is scanned, so a redelivered message is harmless.

The worker runs the scan in a child process (`python -m workers.scan DATASET_ID`) under a memory
cap (RLIMIT_DATA, DARKMATTER_SCAN_MEMORY_BYTES): a hostile or huge source that exhausts it ends
the dataset `invalid` with the reason, instead of taking the worker down and looping on
redelivery. The sweeper rings the scan again for a dataset left pending (a lost message)."""
from __future__ import annotations

import logging
import resource
import subprocess
import sys

from jobs import datasets
from jobs.db import retrying, session_scope
from jobs.settings import Settings, get_settings
from jobs.storage import store_for
from jobs.tables import Dataset

log = logging.getLogger(__name__)


def run_scan(dataset_id: str, settings: Settings | None = None) -> str:
    """In the worker: scan in a capped child; mark the dataset invalid if the child dies."""
    settings = settings or get_settings()
    if _state(settings, dataset_id) != "pending":
        log.info("dataset %s is not pending; skipping its scan", dataset_id)
        return "skipped"
    from workers.runner import child_env

    code = subprocess.call([sys.executable, "-m", "workers.scan", dataset_id], env=child_env(settings))
    if code != 0 and _state(settings, dataset_id) == "pending":
        reason = (f"the scan ran out of memory (limit {settings.scan_memory_bytes / 2**30:.1f} GiB, "
                  "DARKMATTER_SCAN_MEMORY_BYTES)" if code == MEMORY_EXIT else f"the scan process died (code {code})")

        def mark(session):
            dataset = session.get(Dataset, dataset_id)
            if dataset is not None and dataset.state == "pending":
                dataset.state, dataset.error = "invalid", reason

        retrying(lambda: _in_session(settings, mark))
    state = _state(settings, dataset_id)
    log.info("dataset %s scanned: %s", dataset_id, state)
    return state


MEMORY_EXIT = 7


def scan_here(dataset_id: str, settings: Settings) -> str:
    store = store_for(settings)
    with session_scope(settings.database_url) as session:
        dataset = session.get(Dataset, dataset_id)
        if dataset is None or dataset.state != "pending":
            return "skipped"
    datasets.scan(settings, store, dataset)  # outside any transaction: a scan can take minutes
    with session_scope(settings.database_url) as session:
        session.merge(dataset)
    return dataset.state


def _in_session(settings: Settings, fn):
    with session_scope(settings.database_url) as session:
        return fn(session)


def _state(settings: Settings, dataset_id: str) -> str | None:
    return retrying(lambda: _in_session(settings, lambda s: getattr(s.get(Dataset, dataset_id), "state", None)))


def main(dataset_id: str) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s scan %(levelname)s %(message)s")
    settings = get_settings()
    if settings.scan_memory_bytes:
        resource.setrlimit(resource.RLIMIT_DATA, (settings.scan_memory_bytes, settings.scan_memory_bytes))
    try:
        scan_here(dataset_id, settings)
    except MemoryError:
        return MEMORY_EXIT
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
