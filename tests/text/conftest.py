"""Fixtures for the text tests: one thread, and a tokenizer trained once on real glosses."""
from __future__ import annotations

import pytest
import torch

from tests.text.corpus import glosses


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def gloss_texts() -> list[str]:
    return [r["text"] for r in glosses(per_class=300)]


@pytest.fixture(scope="module")
def tokenizer(gloss_texts):
    from core.text.tokenizer import train_tokenizer

    return train_tokenizer(gloss_texts, 500)


@pytest.fixture
def text_service(tmp_path):
    from tests.conftest import make_settings

    settings, _ = make_settings("sqlite", tmp_path / "home")
    from jobs.migrate import upgrade

    upgrade(settings.database_url)
    yield settings
    from jobs.db import get_engine

    get_engine(settings.database_url).dispose()


@pytest.fixture
def client(text_service):
    from fastapi.testclient import TestClient

    from api.app import create_app

    with TestClient(create_app(text_service)) as test_client:
        yield test_client
