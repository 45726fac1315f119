"""A scan runs under a lease: `scanning` while one is live (never dispatched twice), ended `invalid`
with the reason past DARKMATTER_SCAN_SECONDS, by its worker or, if the worker is gone, by the
sweeper. s3:// sources are copied up to DARKMATTER_MAX_SOURCE_BYTES and leave no partial file."""
from __future__ import annotations

from datetime import timedelta

import fsspec
import pytest

from jobs import datasets, sources
from jobs.db import db_now, session_scope
from jobs.tables import DEFAULT_PROJECT, Dataset
from tests.conftest import make_settings
from tests.datasets.make import digits_zip
from workers.runner import sweep_once
from workers.scan import run_scan


@pytest.fixture
def service(tmp_path, monkeypatch):
    (tmp_path / "data").mkdir()
    monkeypatch.setenv("DARKMATTER_DATA_ROOTS", str(tmp_path / "data"))
    settings, _ = make_settings("sqlite", tmp_path / "home")
    settings = settings.model_copy(update={"data_roots": str(tmp_path / "data")})
    from jobs.migrate import upgrade

    upgrade(settings.database_url)
    yield settings
    from jobs.db import get_engine

    get_engine(settings.database_url).dispose()


def pending(settings, tmp_path) -> str:
    zipped = digits_zip(tmp_path / "data" / "d.zip", n=20)
    with session_scope(settings.database_url) as session:
        return datasets.register_uri(session, settings, DEFAULT_PROJECT, str(zipped), "zip").id


def state(settings, dataset_id: str) -> Dataset:
    with session_scope(settings.database_url) as session:
        return session.get(Dataset, dataset_id)


def test_a_live_scan_is_neither_scanned_again_nor_rung_again(service, tmp_path):
    dataset_id = pending(service, tmp_path)
    with session_scope(service.database_url) as session:
        assert datasets.claim_scan(session, dataset_id, "worker-a")
    with session_scope(service.database_url) as session:
        assert not datasets.claim_scan(session, dataset_id, "worker-b")  # one claim wins
        assert datasets.scans_due(session, 0) == []  # the sweeper rings pending scans only
    assert run_scan(dataset_id, service) == "skipped"
    assert state(service, dataset_id).state == "scanning"


def test_a_scan_past_its_time_limit_ends_invalid_with_the_reason(service, tmp_path):
    dataset_id = pending(service, tmp_path)
    assert run_scan(dataset_id, service.model_copy(update={"scan_seconds": 0.5})) == "invalid"
    row = state(service, dataset_id)
    assert "took longer than 0s" in row.error or "took longer than 1s" in row.error, row.error
    assert "DARKMATTER_SCAN_SECONDS" in row.error


def test_the_sweeper_ends_a_scan_whose_worker_is_gone(service, tmp_path):
    dataset_id = pending(service, tmp_path)
    with session_scope(service.database_url) as session:
        assert datasets.claim_scan(session, dataset_id, "worker-gone")
        row = session.get(Dataset, dataset_id)
        started = (db_now(session) - timedelta(seconds=700)).isoformat()
        row.stats = {**row.stats, "scan": {"worker": "worker-gone", "started_at": started}}
    sweep_once(service.model_copy(update={"scan_seconds": 600.0}))
    row = state(service, dataset_id)
    assert row.state == "invalid" and "did not finish within 660s" in row.error, row.error


def test_an_s3_source_over_the_size_cap_is_refused_and_leaves_no_part_file(service, tmp_path):
    with fsspec.open("memory://bucket/big.zip", "wb") as f:
        f.write(b"x" * 5000)
    target = tmp_path / "cache" / "source.zip"
    capped = service.model_copy(update={"max_source_bytes": 4096})
    with pytest.raises(datasets.DatasetUnavailable, match="larger than the limit of 4,096 bytes"):
        sources.copy_capped(capped, "memory://bucket/big.zip", target)
    assert list(target.parent.iterdir()) == []  # neither the file nor its .part
    sources.copy_capped(service, "memory://bucket/big.zip", target)
    assert target.read_bytes() == b"x" * 5000
