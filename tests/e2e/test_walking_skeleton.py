"""A real worker process takes a pretrain job from submit to succeeded, on each backend."""
from __future__ import annotations

import hashlib

import pytest
import torch
from safetensors.torch import load as st_load

from core.checkpoint import load_backbone
from core.precision import resolve_precision
from tests.conftest import TINY_PRETRAIN, wait_for


def test_pretrain_job_runs_end_to_end(api, worker, tmp_path):
    worker()
    job = api.post("/v1/jobs", json=TINY_PRETRAIN).json()
    assert job["state"] == "queued" and job["total_steps"] == 6
    running = wait_for(api, job["id"], states=("running", "succeeded", "failed"))
    assert running["state"] in ("running", "succeeded"), running
    done = wait_for(api, job["id"])
    assert done["state"] == "succeeded", done
    assert done["attempt"] == 1 and done["step"] == 6 and done["progress"] == 1.0
    assert {"loss", "lr", "img_per_s"} <= set(done["metrics"])

    checkpoint_id = done["result"]["checkpoint"]
    checkpoint = api.get(f"/v1/checkpoints/{checkpoint_id}").json()
    assert checkpoint["manifest"]["dataset"]["content_hash"]
    assert checkpoint["manifest"]["spec"]["method"] == "simclr"
    assert checkpoint["manifest"]["recipe"] == done["recipe"]  # the resolved recipe travels with the weights
    response = api.get(f"/v1/checkpoints/{checkpoint_id}/download")
    assert response.status_code == 200
    body = response.content
    assert response.headers["etag"] == f'"{hashlib.sha256(body).hexdigest()}"'
    assert int(response.headers["content-length"]) == len(body)
    tensors = st_load(body)
    assert any(k.endswith("weight") for k in tensors)
    (tmp_path / "b.safetensors").write_bytes(body)
    model, manifest = load_backbone(tmp_path / "b.safetensors")
    assert model(torch.zeros(2, 1, 8, 8)).shape == (2, manifest["feature_dim"])

    partial = api.get(f"/v1/checkpoints/{checkpoint_id}/download", headers={"Range": "bytes=0-99"})
    assert partial.status_code == 206 and partial.content == body[:100]

    scores = api.get("/v1/scores", params={"protocol": "knn"}).json()["data"]
    mine = [s for s in scores if s["checkpoint_id"] == checkpoint_id]
    assert mine and 0.6 < mine[0]["value"] <= 1.0  # ten classes, chance 0.1: a real margin, not noise

    image = [[float((i * j) % 16 * 16) for j in range(8)] for i in range(8)]
    out = api.post("/v1/embeddings", json={"model": checkpoint_id, "input": [image, image]}).json()
    assert [d["index"] for d in out["data"]] == [0, 1]
    assert len(out["data"][0]["embedding"]) == manifest["feature_dim"]
    assert out["data"][0]["embedding"] == pytest.approx(out["data"][1]["embedding"])
    # the endpoint serves what core.checkpoint.load_backbone gives on the normalised input: exactly in
    # fp32, to bf16's 8 mantissa bits where the server's CPU computes bf16 natively (precision auto)
    norm = manifest["normalization"]
    x = (torch.tensor(image)[None, None] / 255 - norm["mean"][0]) / norm["std"][0]
    with torch.no_grad():
        expected = model.eval()(x)[0]
    served = torch.tensor(out["data"][0]["embedding"])
    assert out["usage"]["precision"] == resolve_precision("auto", torch.device("cpu"))
    if out["usage"]["precision"] == "fp32":
        assert torch.allclose(served, expected, atol=1e-4)
    else:
        assert torch.allclose(served, expected, rtol=2e-2, atol=2e-3)
        assert torch.nn.functional.cosine_similarity(served, expected, dim=0) > 0.999


def test_redelivered_message_runs_job_once(api, worker, service):
    from jobs.queue import enqueue

    worker()
    job = api.post("/v1/jobs", json=TINY_PRETRAIN).json()
    enqueue(service, job["id"], "default")  # the same doorbell rung twice
    done = wait_for(api, job["id"])
    assert done["state"] == "succeeded" and done["attempt"] == 1
    events = api.get(f"/v1/jobs/{job['id']}/events").json()["data"]
    assert sum("claimed" in e["message"] for e in events) == 1
