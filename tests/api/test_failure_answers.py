"""The failure answers a client can meet: 410 when a checkpoint's file is gone from the store,
503 from /readyz when the database cannot be reached."""
from __future__ import annotations

import pytest
import torch
from fastapi.testclient import TestClient

from api.app import create_app
from jobs import checkpoints
from jobs.db import session_scope
from jobs.ids import new_id
from jobs.storage import store_for
from jobs.tables import DEFAULT_PROJECT, Job


def test_a_checkpoint_whose_file_is_gone_answers_410(sqlite_service):
    from jobs.migrate import upgrade

    upgrade(sqlite_service.database_url)
    store = store_for(sqlite_service)
    with session_scope(sqlite_service.database_url) as session:
        job = Job(id=new_id("job"), project_id=DEFAULT_PROJECT, kind="pretrain", state="succeeded", spec={},
                  queue="default", result={})
        session.add(job)
        session.flush()
        row = checkpoints.register(session, store, project_id=DEFAULT_PROJECT, job_id=job.id, step=1, final=True,
                                   method="simclr", backbone="small_cnn", dataset_id=None,
                                   trees={"backbone": {"w": torch.zeros(4)}}, manifest={})
        checkpoint_id, key = row.id, row.parts["backbone"]["key"]
    store.delete(key)
    with TestClient(create_app(sqlite_service)) as api:
        for response in (api.get(f"/v1/checkpoints/{checkpoint_id}/download"),
                         api.head(f"/v1/checkpoints/{checkpoint_id}/download"),
                         api.post("/v1/embeddings", json={"model": checkpoint_id, "input": [[[0]]]})):
            assert response.status_code == 410, response.text
        assert "gone" in api.get(f"/v1/checkpoints/{checkpoint_id}/download").json()["detail"]
        assert api.get(f"/v1/checkpoints/{checkpoint_id}").status_code == 200  # the row is still there


def test_readyz_is_503_while_the_database_is_unreachable(sqlite_service, tmp_path):
    with TestClient(create_app(sqlite_service)) as api:
        assert api.get("/readyz").status_code == 200
    unreachable = sqlite_service.model_copy(update={"database_url": "postgresql+psycopg://postgres@127.0.0.1:1/none",
                                                    "migrate_on_start": False})
    with TestClient(create_app(unreachable)) as api:
        response = api.get("/readyz")
        assert response.status_code == 503 and "database unavailable" in response.json()["detail"]
        assert api.get("/healthz").status_code == 200  # alive, not ready


def registered_cnn(settings) -> str:
    from core.backbones import build_backbone
    from jobs.migrate import upgrade

    upgrade(settings.database_url)
    torch.manual_seed(0)
    model = build_backbone("small_cnn", in_channels=1, image_size=8, width=8)
    manifest = {"backbone": model.config, "feature_dim": model.feature_dim, "input_size": [1, 8, 8],
                "normalization": {"mean": [0.5], "std": [0.25]}}
    with session_scope(settings.database_url) as session:
        job = Job(id=new_id("job"), project_id=DEFAULT_PROJECT, kind="pretrain", state="succeeded", spec={},
                  queue="default", result={})
        session.add(job)
        session.flush()
        return checkpoints.register(session, store_for(settings), project_id=DEFAULT_PROJECT, job_id=job.id,
                                    step=1, final=True, method="simclr", backbone="small_cnn", dataset_id=None,
                                    trees={"backbone": model.state_dict()}, manifest=manifest).id


def test_an_embedding_request_holds_no_database_connection_during_its_forward_pass(sqlite_service, monkeypatch):
    """Requests waiting for a shared forward pass must not drain the connection pool."""
    from api.routers import embeddings
    from jobs.db import get_engine

    checkpoint_id = registered_cnn(sqlite_service)
    held, original = [], embeddings.embed_any

    def spy(*args, **kwargs):
        held.append(get_engine(sqlite_service.database_url).pool.checkedout())
        return original(*args, **kwargs)

    monkeypatch.setattr(embeddings, "embed_any", spy)
    with TestClient(create_app(sqlite_service)) as api:
        response = api.post("/v1/embeddings", json={"model": checkpoint_id, "input": [[[0.0] * 8] * 8]})
    assert response.status_code == 200, response.text
    assert held == [0]


def pool_timeout():
    from sqlalchemy.exc import TimeoutError as PoolTimeout

    return PoolTimeout("QueuePool limit of size 5 overflow 10 reached")


def database_locked():
    import sqlite3

    from sqlalchemy.exc import OperationalError

    return OperationalError("UPDATE jobs ...", {}, sqlite3.OperationalError("database is locked"))


@pytest.mark.parametrize("error", [pool_timeout, database_locked])
def test_a_busy_database_answers_503_with_retry_after(sqlite_service, monkeypatch, error):
    """The pool exhausted, or SQLite locked by a stopped writer past its busy timeout."""
    from api.routers import embeddings

    def exhausted(*args, **kwargs):
        raise error()

    monkeypatch.setattr(embeddings, "get_checkpoint", exhausted)
    from jobs.migrate import upgrade

    upgrade(sqlite_service.database_url)
    with TestClient(create_app(sqlite_service)) as api:
        response = api.post("/v1/embeddings", json={"model": "ckpt_x", "input": [[[0.0] * 8] * 8]})
    assert response.status_code == 503 and response.headers["retry-after"] == "1"
    assert "busy" in response.json()["detail"]
