"""Scan a pending dataset: validate, describe, hash, prepare arrays; the row ends `ready` or
`invalid`.

The worker first claims the dataset (`pending` -> `scanning`, a conditional UPDATE recording the
scan's start), so a redelivered or re-rung message finds it taken and returns. It then runs the
scan in a child process (`python -m workers.scan DATASET_ID`) under a memory cap (RLIMIT_DATA,
DARKMATTER_SCAN_MEMORY_BYTES) and a time limit (DARKMATTER_SCAN_SECONDS): a hostile or huge source
that exhausts either ends the dataset `invalid` with the reason, instead of taking the worker down
or holding it forever. The sweeper rings the scan again for a dataset left `pending` (a lost
message) and ends `invalid` one left `scanning` past the time limit (a lost worker)."""
from __future__ import annotations

import logging
import resource
import subprocess
import sys
import uuid

from jobs import datasets, sources
from jobs.db import retrying, session_scope
from jobs.settings import Settings, get_settings
from jobs.storage import store_for
from jobs.tables import Dataset

log = logging.getLogger(__name__)
MEMORY_EXIT = 7


def run_scan(dataset_id: str, settings: Settings | None = None) -> str:
    """In the worker: claim the scan, run it in a capped child; mark the dataset invalid if the
    child dies or runs past scan_seconds."""
    settings = settings or get_settings()
    worker = uuid.uuid4().hex[:12]
    if not retrying(lambda: _in_session(settings, lambda s: datasets.claim_scan(s, dataset_id, worker))):
        log.info("dataset %s is not pending; skipping its scan", dataset_id)
        return "skipped"
    from workers.runner import child_env

    reason = None
    try:
        code = subprocess.run([sys.executable, "-m", "workers.scan", dataset_id], env=child_env(settings),
                              timeout=settings.scan_seconds or None).returncode
    except subprocess.TimeoutExpired:  # run() has killed the child
        code = None
        reason = (f"the scan took longer than {settings.scan_seconds:.0f}s (DARKMATTER_SCAN_SECONDS) and was "
                  "stopped")
    if code != 0:
        reason = reason or (f"the scan ran out of memory (limit {settings.scan_memory_bytes / 2**30:.1f} GiB, "
                            "DARKMATTER_SCAN_MEMORY_BYTES)" if code == MEMORY_EXIT
                            else f"the scan process died (code {code})")
        if retrying(lambda: _in_session(settings, lambda s: datasets.fail_scan(s, dataset_id, reason))):
            _drop_upload(settings, dataset_id)
    state = _state(settings, dataset_id)
    log.info("dataset %s scanned: %s", dataset_id, state)
    return state


def _drop_upload(settings: Settings, dataset_id: str) -> None:
    """An unusable upload keeps no bytes."""
    with session_scope(settings.database_url) as session:
        row = session.get(Dataset, dataset_id)
        upload = row is not None and row.uri.startswith(sources.UPLOAD_SCHEME)
    if upload:
        store_for(settings).delete(f"datasets/{dataset_id}")


def scan_here(dataset_id: str, settings: Settings) -> str:
    store = store_for(settings)
    with session_scope(settings.database_url) as session:
        dataset = session.get(Dataset, dataset_id)
        if dataset is None or dataset.state != datasets.SCANNING:
            return "skipped"
        session.expunge(dataset)
    datasets.scan(settings, store, dataset)  # outside any transaction: a scan can take minutes
    with session_scope(settings.database_url) as session:
        datasets.finish_scan(session, dataset)
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
