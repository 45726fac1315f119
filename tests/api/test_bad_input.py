"""Bad input answers 4xx JSON with a message, never 500."""
from __future__ import annotations

import pytest

from tests.conftest import TINY_PRETRAIN


@pytest.fixture
def api(sqlite_service):
    from fastapi.testclient import TestClient

    from api.app import create_app

    with TestClient(create_app(sqlite_service)) as client:
        yield client


def detail(response) -> str:
    body = response.json()
    assert "detail" in body
    return str(body["detail"])


@pytest.mark.parametrize("change, status, message", [
    ({"method": "nope"}, 422, "unknown method"),
    ({"dataset": "no-such-dataset"}, 404, "not found"),
    ({"epochs": -1, "steps": None}, 422, "greater than 0"),
    ({"batch_size": 4096}, 422, "larger than the dataset"),
    ({"backbone": "vgg"}, 422, "unknown backbone"),
    ({"augment": {"sparkle": 1}}, 422, "unknown augmentation"),
    ({"method_options": {"momentum": 0.9}}, 422, "unknown method_options"),
    ({"queue": "../etc"}, 422, "pattern"),
    ({"epochs": 2}, 422, "not both"),
    ({"kind": "transmogrify"}, 422, "tag"),
    ({"cuda_graphs": True, "device": "cpu"}, 422, "cuda_graphs needs a CUDA device"),
])
def test_bad_pretrain_spec_is_rejected_with_a_message(api, change, status, message):
    spec = {**TINY_PRETRAIN, **change}
    response = api.post("/v1/jobs", json=spec)
    assert response.status_code == status, response.text
    assert message in detail(response)


def test_malformed_json_body_is_422(api):
    response = api.post("/v1/jobs", content=b"{not json", headers={"content-type": "application/json"})
    assert response.status_code == 422


def test_unknown_ids_are_404(api):
    for path in ("/v1/jobs/job_0000", "/v1/checkpoints/ckpt_0000", "/v1/checkpoints/ckpt_0000/download",
                 "/v1/datasets/ds_0000", "/v1/checkpoints/ckpt_0000/scores"):
        response = api.get(path)
        assert response.status_code == 404, path
        assert "not found" in detail(response)
    assert api.post("/v1/jobs/job_0000/cancel").status_code == 404
    response = api.post("/v1/embeddings", json={"model": "ckpt_0000", "input": [[[0]]]})
    assert response.status_code == 404


@pytest.mark.parametrize("body", [
    {"model": "x"},
    {"model": "x", "input": []},
    {"model": "x", "input": 5},  # (one string alone is a list of one, as in OpenAI's API)
    {"model": "x", "input": [1, 2], "encoding_format": "hex"},
])
def test_malformed_embedding_request_is_422(api, body):
    assert api.post("/v1/embeddings", json=body).status_code == 422


def test_too_many_embedding_inputs_is_413(api, sqlite_service):
    n = sqlite_service.max_embedding_inputs + 1
    response = api.post("/v1/embeddings", json={"model": "ckpt_0000", "input": [[[0]]] * n})
    assert response.status_code == 413
    assert "at most" in detail(response)


def test_unknown_builtin_dataset_is_422(api):
    response = api.post("/v1/datasets", json={"builtin": "imagenet"})
    assert response.status_code == 422
    assert "digits" in detail(response)


def test_cancel_a_queued_job_is_immediate_and_idempotency_key_replays(api):
    first = api.post("/v1/jobs", json=TINY_PRETRAIN, headers={"Idempotency-Key": "k1"}).json()
    again = api.post("/v1/jobs", json=TINY_PRETRAIN, headers={"Idempotency-Key": "k1"})
    assert again.status_code == 200 and again.json()["id"] == first["id"]  # a replay, not a new job
    other = api.post("/v1/jobs", json={**TINY_PRETRAIN, "seed": 7}, headers={"Idempotency-Key": "k1"})
    assert other.status_code == 409
    cancelled = api.post(f"/v1/jobs/{first['id']}/cancel").json()
    assert cancelled["state"] == "cancelled"
    assert api.post(f"/v1/jobs/{first['id']}/cancel").status_code == 409
    listed = api.get("/v1/jobs", params={"state": "cancelled"}).json()
    assert [j["id"] for j in listed["data"]] == [first["id"]]


def test_methods_and_health(api):
    names = [m["name"] for m in api.get("/v1/methods").json()["data"]]
    assert "simclr" in names
    assert api.get("/healthz").json() == {"status": "ok"}
    assert api.get("/readyz").status_code == 200
    assert api.post("/v1/jobs", json=TINY_PRETRAIN).status_code == 201  # no worker: it stays queued
    metrics = api.get("/metrics")
    assert metrics.status_code == 200
    assert "# TYPE darkmatter_jobs gauge" in metrics.text
    assert 'darkmatter_jobs{state="queued"} 1' in metrics.text.splitlines()
    assert api.get("/openapi.json").json()["paths"]["/v1/jobs"]
