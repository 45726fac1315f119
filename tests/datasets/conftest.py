"""A SQLite service with small upload limits and a data root, and its HTTP client."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import make_settings


@pytest.fixture
def data_root(tmp_path) -> Path:
    root = tmp_path / "data"
    root.mkdir()
    return root


@pytest.fixture
def small_service(tmp_path, data_root, monkeypatch):
    monkeypatch.setenv("DARKMATTER_DATA_ROOTS", str(data_root))  # worker processes inherit it
    settings, _ = make_settings("sqlite", tmp_path / "home")
    settings = settings.model_copy(update={"max_upload_bytes": 1 << 20, "data_roots": str(data_root)})
    from jobs.migrate import upgrade

    upgrade(settings.database_url)
    yield settings
    from jobs.db import get_engine

    get_engine(settings.database_url).dispose()


@pytest.fixture
def client(small_service):
    from fastapi.testclient import TestClient

    from api.app import create_app

    with TestClient(create_app(small_service)) as test_client:
        yield test_client


def stored_files(settings) -> list[str]:
    root = Path(settings.storage_url)
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()) if root.exists() else []
