"""Dataset scans: a lost scan message is rung again by the sweeper, and a scan that dies in its
memory-capped child ends the dataset `invalid` with the reason, the worker unharmed."""
from __future__ import annotations

import pytest

import time

from jobs import datasets
from jobs.db import session_scope
from jobs.tables import DEFAULT_PROJECT, Dataset
from tests.conftest import WorkerProcess
from tests.datasets.make import digits_zip

SQLITE_ONLY = pytest.mark.parametrize("service", ["sqlite"], indirect=True)  # Postgres: test_fencing, test_outages


def pending_dataset(settings, path) -> str:
    with session_scope(settings.database_url) as session:  # registered, but its scan message never sent
        return datasets.register_uri(session, settings, DEFAULT_PROJECT, str(path), "zip").id


def wait_state(settings, dataset_id: str, timeout: float = 120) -> Dataset:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with session_scope(settings.database_url) as session:
            row = session.get(Dataset, dataset_id)
        if row.state not in ("pending", "scanning"):
            return row
        time.sleep(0.3)
    raise AssertionError(f"dataset {dataset_id} still pending after {timeout}s")


@SQLITE_ONLY
def test_a_lost_scan_is_rung_again_and_a_scan_out_of_memory_ends_invalid(service, tmp_path):
    (tmp_path / "data").mkdir()
    zipped = digits_zip(tmp_path / "data" / "d.zip", n=40)
    settings = service.model_copy(update={"requeue_after": 1.0, "data_roots": str(tmp_path / "data")})
    lost = pending_dataset(settings, zipped)
    w = WorkerProcess(settings).start()
    try:
        row = wait_state(settings, lost)
        assert row.state == "ready" and row.n_items + row.n_test == 40, row.error
    finally:
        w.stop()
    capped = settings.model_copy(update={"scan_memory_bytes": 64 * 1024**2})  # far below what a scan needs
    starved = pending_dataset(capped, zipped)
    w = WorkerProcess(capped).start()
    try:
        row = wait_state(capped, starved)
        assert row.state == "invalid" and "scan" in row.error, row.error
        assert w.proc.poll() is None  # the worker survived its scan
    finally:
        w.stop()
