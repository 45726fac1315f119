"""The failure answers a client can meet: 410 when a checkpoint's file is gone from the store,
503 from /readyz when the database cannot be reached."""
from __future__ import annotations

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
