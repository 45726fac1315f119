"""API keys are stored hashed and scope everything to one project; request limits answer
413/422/429 with a JSON message."""
from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient
from sqlalchemy import select

from api.app import create_app
from api.ratelimit import TokenBuckets
from jobs import checkpoints, datasets
from jobs.db import session_scope
from jobs.keys import create_key
from jobs.storage import ArtifactStore
from jobs.tables import ApiKey
from tests.conftest import TINY_PRETRAIN


def client(settings, **changes) -> TestClient:
    return TestClient(create_app(settings.model_copy(update=changes)))


def bearer(key: str) -> dict:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
def two_projects(service):
    """Keys of projects A and B; A owns a dataset, a job and a checkpoint."""
    with session_scope(service.database_url) as session:
        project_a, key_a = create_key(session, "a")
        _, key_b = create_key(session, "b")
        dataset = datasets.register_builtin(session, project_a, "digits")
        dataset_id = dataset.id
    with client(service, auth=True) as api:
        job = api.post("/v1/jobs", json=TINY_PRETRAIN, headers=bearer(key_a))
        assert job.status_code == 201, job.text
    with session_scope(service.database_url) as session:
        row = checkpoints.register(session, ArtifactStore(service.storage_url), project_id=project_a,
                                   job_id=job.json()["id"], step=1, final=True, method="simclr", backbone="small_cnn",
                                   dataset_id=dataset_id, trees={"backbone": {"w": torch.zeros(2)}}, manifest={})
        checkpoint_id = row.id
    return {"a": key_a, "b": key_b, "job": job.json()["id"], "checkpoint": checkpoint_id, "dataset": dataset_id}


def test_api_keys_are_stored_only_as_hashes(service, two_projects):
    with session_scope(service.database_url) as session:
        rows = session.scalars(select(ApiKey)).all()
    stored = {value for row in rows for value in (row.key_hash, row.prefix, row.name, row.id)}
    for key in (two_projects["a"], two_projects["b"]):
        assert key not in stored
        assert hashlib.sha256(key.encode()).hexdigest() in stored
    with client(service, auth=True) as api:
        assert api.get("/v1/jobs").status_code == 401
        assert api.get("/v1/jobs", headers=bearer("dm_not-a-key")).status_code == 401
        assert api.get("/v1/jobs", headers={"X-API-Key": two_projects["a"]}).status_code == 200
        with session_scope(service.database_url) as session:
            for row in session.scalars(select(ApiKey)):
                row.disabled = True
        assert api.get("/v1/jobs", headers=bearer(two_projects["a"])).status_code == 401


def test_another_projects_ids_are_404(service, two_projects):
    a, b = bearer(two_projects["a"]), bearer(two_projects["b"])
    job, ckpt, ds = two_projects["job"], two_projects["checkpoint"], two_projects["dataset"]
    reads = [f"/v1/jobs/{job}", f"/v1/jobs/{job}/metrics", f"/v1/jobs/{job}/events", f"/v1/checkpoints/{ckpt}",
             f"/v1/checkpoints/{ckpt}/download", f"/v1/checkpoints/{ckpt}/scores", f"/v1/datasets/{ds}"]
    with client(service, auth=True) as api:
        for path in reads:
            assert api.get(path, headers=a).status_code == 200, path
            response = api.get(path, headers=b)
            assert response.status_code == 404 and "not found" in response.json()["detail"], path
        assert api.head(f"/v1/checkpoints/{ckpt}/download", headers=a).status_code == 200
        assert api.head(f"/v1/checkpoints/{ckpt}/download", headers=b).status_code == 404
        assert api.post(f"/v1/jobs/{job}/cancel", headers=b).status_code == 404
        assert api.post("/v1/embeddings", json={"model": ckpt, "input": [[[0]]]}, headers=b).status_code == 404
        assert api.post("/v1/jobs", json={"kind": "evaluate", "checkpoint": ckpt, "dataset": "digits"},
                        headers=b).status_code == 404
        assert api.post("/v1/jobs", json={**TINY_PRETRAIN, "dataset": ds}, headers=b).status_code == 404
        assert api.get("/v1/jobs", headers=b).json()["total"] == 0
        assert api.get("/v1/checkpoints", headers=b).json()["data"] == []
        assert api.get("/v1/checkpoints", params={"job": job}, headers=b).json()["data"] == []
        listed_by_b = api.get("/v1/datasets", headers=b).json()["data"]
        assert ds not in [d["id"] for d in listed_by_b] and ds not in str(listed_by_b)
        assert ds in [d["id"] for d in api.get("/v1/datasets", headers=a).json()["data"]]
        assert api.get("/v1/jobs", headers=a).json()["total"] == 1


def test_body_over_the_limit_is_413_even_when_chunked(sqlite_service):
    big = {**TINY_PRETRAIN, "method_options": {"proj_dim": 16, "pad": "x" * 3000}}
    with client(sqlite_service, max_body_bytes=2000) as api:
        response = api.post("/v1/jobs", json=big)
        assert response.status_code == 413 and "larger than 2000" in response.json()["detail"]

        def chunks():
            for _ in range(10):
                yield b" " * 500
        response = api.post("/v1/jobs", content=chunks(), headers={"content-type": "application/json"})
        assert response.status_code == 413, response.text
        assert api.post("/v1/jobs", json=TINY_PRETRAIN).status_code == 201  # under the limit
        upload = api.post("/v1/datasets", files={"file": ("d.npz", b" " * 3000)})
        assert upload.status_code != 413  # multipart uploads enforce max_upload_bytes themselves
        registration = api.post("/v1/datasets", content=b" " * 3000, headers={"content-type": "application/json"})
        assert registration.status_code == 413  # a JSON registration is a body like any other
        bad = api.post("/v1/jobs", content=b"{}", headers={"content-type": "application/json",
                                                            "content-length": "nope"})
        assert bad.status_code == 400


def test_embedding_inputs_are_limited_in_count_and_size(sqlite_service):
    with client(sqlite_service, max_embedding_inputs=2, max_embedding_input_bytes=100) as api:
        many = api.post("/v1/embeddings", json={"model": "ckpt_x", "input": [[[0]]] * 3})
        assert many.status_code == 413 and "at most 2" in many.json()["detail"]
        large = api.post("/v1/embeddings", json={"model": "ckpt_x", "input": ["A" * 101]})
        assert large.status_code == 413 and "input[0] is larger than 100 bytes" in large.json()["detail"]
        unknown_field = api.post("/v1/embeddings", json={"model": "ckpt_x", "input": [[[0]]], "extra": 1})
        assert unknown_field.status_code == 422


def test_page_size_is_capped(sqlite_service):
    with client(sqlite_service, page_size_max=2) as api:
        for _ in range(3):
            api.post("/v1/jobs", json=TINY_PRETRAIN)
        page = api.get("/v1/jobs", params={"limit": 100}).json()
        assert page["limit"] == 2 and len(page["data"]) == 2 and page["total"] == 3
        for path in ("/v1/jobs", "/v1/checkpoints", "/v1/scores"):
            assert api.get(path, params={"limit": 10**6}).status_code == 422
            assert api.get(path, params={"offset": 10**30}).status_code == 422


def test_rate_limit_is_per_verified_key_with_retry_after(service, two_projects):
    a, b = bearer(two_projects["a"]), bearer(two_projects["b"])
    with client(service, auth=True, rate_limit_per_second=0.5, rate_limit_burst=3) as api:
        # Every request counts against the key, the first one too (charged once the key is looked up).
        codes = [api.get("/v1/jobs", headers=a).status_code for _ in range(5)]
        assert codes == [200, 200, 200, 429, 429]
        limited = api.get("/v1/jobs", headers=a)
        assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1
        assert "rate limit" in limited.json()["detail"]
        assert api.get("/v1/jobs", headers=b).status_code == 200  # another key is not held back by a's bucket
        assert api.get("/healthz", headers=a).status_code == 200  # probes are exempt


def test_token_bucket_refills_at_its_rate():
    buckets = TokenBuckets(rate=2.0, burst=2)
    assert buckets.take("k", now=0.0) == 0 and buckets.take("k", now=0.0) == 0
    assert buckets.take("k", now=0.0) == pytest.approx(0.5)
    assert buckets.take("k", now=0.5) == 0  # one token back after 1/rate seconds
    assert buckets.take("other", now=0.5) == 0


def test_isolation_on_scores_neighbors_indexes_evaluations_streams_and_uploads(service, two_projects, tmp_path):
    from jobs.tables import Job, Score
    from tests.datasets.make import digits_zip

    a, b = bearer(two_projects["a"]), bearer(two_projects["b"])
    ckpt, job = two_projects["checkpoint"], two_projects["job"]
    with session_scope(service.database_url) as session:
        project_a = session.get(Job, job).project_id
        session.add(Score(project_id=project_a, checkpoint_id=ckpt, method="simclr", backbone="small_cnn",
                          dataset_id=two_projects["dataset"], protocol="knn", metric="top1", value=0.9))
        session.add(Job(id="job_index_of_a", project_id=project_a, kind="embed-index", state="succeeded", spec={},
                        queue="default", result={"key": "indexes/job_index_of_a.safetensors", "sha256": "0" * 64,
                                                 "checkpoint": ckpt, "dataset": two_projects["dataset"],
                                                 "split": "train"}))
    with client(service, auth=True) as api:
        mine = api.get("/v1/scores", headers=a).json()
        assert [s["checkpoint_id"] for s in mine["data"]] == [ckpt] and mine["leaderboard"]
        for params in ({}, {"checkpoint": ckpt}, {"dataset": two_projects["dataset"]}, {"method": "simclr"}):
            theirs = api.get("/v1/scores", params=params, headers=b)
            assert theirs.status_code in (200, 404), theirs.text
            if theirs.status_code == 200:
                assert theirs.json()["data"] == [] and ckpt not in str(theirs.json()), params

        query = {"index": "job_index_of_a", "query": [0], "k": 1}
        assert api.post("/v1/neighbors", json=query, headers=a).status_code == 410  # a's: found, file missing
        refused = api.post("/v1/neighbors", json=query, headers=b)
        assert refused.status_code == 404 and "not found" in refused.json()["detail"]

        for spec in ({"kind": "embed-index", "checkpoint": ckpt, "dataset": "digits"},
                     {"kind": "evaluate", "checkpoints": ["raw-pixels", ckpt], "dataset": "digits"},
                     {"kind": "evaluate", "checkpoints": [ckpt], "dataset": "digits"}):
            response = api.post("/v1/jobs", json=spec, headers=b)
            assert response.status_code == 404 and ckpt in response.json()["detail"], (spec, response.text)
            assert api.post("/v1/jobs", json=spec, headers=a).status_code == 201, spec
        assert api.get("/v1/jobs", headers=b).json()["total"] == 0

        stream = api.get(f"/v1/jobs/{job}/events", params={"stream": "true"}, headers=b)
        assert stream.status_code == 404 and "not found" in stream.json()["detail"]
        assert api.get(f"/v1/jobs/{job}/events", params={"stream": "true"}).status_code == 401

        data = digits_zip(tmp_path / "d.zip", n=30).read_bytes()
        anonymous = api.post("/v1/datasets", files={"file": ("d.zip", data)})
        assert anonymous.status_code == 401
        uploads = Path(service.storage_url) / "datasets"
        assert not uploads.exists() or not any(uploads.rglob("*"))  # nothing kept from a refused upload
        uploaded = api.post("/v1/datasets", files={"file": ("d.zip", data)}, headers=b)
        assert uploaded.status_code == 201, uploaded.text
        theirs = uploaded.json()["id"]
        assert api.get(f"/v1/datasets/{theirs}", headers=a).status_code == 404
        assert theirs not in str(api.get("/v1/datasets", headers=a).json())
        assert api.post("/v1/jobs", json={**TINY_PRETRAIN, "dataset": theirs}, headers=a).status_code == 404
