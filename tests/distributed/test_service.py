"""Jobs of several processes on one machine through the service: HTTP -> worker -> torchrun (gloo)
-> checkpoint -> auto-eval, and a rank killed mid-run."""
from __future__ import annotations

import os
import time

import pytest
import torch

from core.checkpoint import load_backbone
from tests.conftest import TINY_PRETRAIN, wait_for
from tests.faults.conftest import checkpoints_of, children, events, wait_progress

SQLITE_ONLY = pytest.mark.parametrize("service", ["sqlite"], indirect=True)
SPEC = {**TINY_PRETRAIN, "devices": 2, "steps": 8, "batch_size": 32, "checkpoint_every": 4,
        "evaluations": [{"protocol": "knn", "options": {"k": [5]}}]}


def test_two_process_job_end_to_end(api, worker, tmp_path):
    worker()
    job = api.post("/v1/jobs", json=SPEC).json()
    assert job["devices"] == 2 and job["recipe"]["distributed"]["world_size"] == 2
    done = wait_for(api, job["id"], timeout=300)
    assert done["state"] == "succeeded" and done["attempt"] == 1, done
    assert done["step"] == 8 and done["compute_seconds"] > 0
    assert any("on 2 processes" in e["message"] for e in api.get(f"/v1/jobs/{job['id']}/events").json()["data"])

    checkpoint = api.get(f"/v1/checkpoints/{done['result']['checkpoint']}").json()
    info = checkpoint["manifest"]["distributed"]
    assert info == {**info, "world_size": 2, "global_batch": 32, "per_device_batch": 16, "sync_batchnorm": True}
    body = api.get(f"/v1/checkpoints/{checkpoint['id']}/download").content
    (tmp_path / "b.safetensors").write_bytes(body)
    model, manifest = load_backbone(tmp_path / "b.safetensors")
    assert not any(k.startswith("module.") for k in model.state_dict())
    assert model(torch.zeros(2, 1, 8, 8)).shape == (2, manifest["feature_dim"])
    scores = api.get("/v1/scores", params={"protocol": "knn"}).json()["data"]
    assert [s for s in scores if s["checkpoint_id"] == checkpoint["id"]]  # auto-eval ran on rank 0


def ranks_of(worker) -> list[int]:
    """The pids of the worker's torchrun ranks (children of its torchrun agent)."""
    for agent in children(worker.proc.pid):
        try:
            if b"workers.torchrun" in open(f"/proc/{agent}/cmdline", "rb").read():
                return [pid for pid in children(agent) if b"workers.child" in open(f"/proc/{pid}/cmdline", "rb").read()]
        except OSError:
            continue
    return []


@SQLITE_ONLY
def test_kill_9_of_one_rank_retries_from_the_last_checkpoint(service, api, worker):
    spec = {**SPEC, "steps": 60, "checkpoint_every": 10, "log_every": 1, "evaluations": []}
    w = worker()
    job_id = api.post("/v1/jobs", json=spec).json()["id"]
    wait_progress(service, job_id, 0, 15, timeout=240)
    deadline = time.monotonic() + 30
    while len(ranks := ranks_of(w)) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert len(ranks) == 2, w.output()[-3000:]
    os.kill(max(ranks), 9)
    done = wait_for(api, job_id, timeout=300)
    assert done["state"] == "succeeded" and done["attempt"] == 2, done
    resumed = [e.message for e in events(service, job_id) if "resuming at step" in e.message]
    assert len(resumed) == 1 and int(resumed[0].rsplit(" ", 1)[1]) >= 10, resumed
    finals = [c for c in checkpoints_of(service, job_id) if c.final]
    assert len(finals) == 1 and finals[0].step == 60  # no second final checkpoint


@SQLITE_ONLY
def test_queue_must_be_configured_and_live(api):
    response = api.post("/v1/jobs", json={**TINY_PRETRAIN, "queue": "no-such-queue"})
    assert response.status_code == 422 and "not configured" in response.json()["detail"]
    job = api.post("/v1/jobs", json={**TINY_PRETRAIN, "queue": "gpu"}).json()
    job = api.get(f"/v1/jobs/{job['id']}").json()
    assert any("no live worker consumes queue 'gpu'" in w for w in job["warnings"]), job
    uneven = api.post("/v1/jobs", json={**TINY_PRETRAIN, "devices": 3, "batch_size": 32})
    assert uneven.status_code == 422 and "split evenly" in uneven.json()["detail"]


def wait_until(read, ok, timeout: float):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = read()
        if ok(value):
            return value
        time.sleep(0.3)
    raise AssertionError(f"condition not met in {timeout}s: {value}")
