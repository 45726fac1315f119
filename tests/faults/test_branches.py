"""The failure branches: a torn newest checkpoint, a stalled worker that lost its lease, files gone
from the store (410), an unreachable database (/readyz 503), and the periodic garbage collection."""
from __future__ import annotations

import pytest

import os
import signal
import time
from pathlib import Path

from fastapi.testclient import TestClient

from jobs.storage import ArtifactStore
from tests.conftest import TINY_PRETRAIN, wait_for
from tests.faults.conftest import FAULT_SPEC, checkpoints_of, events, pause_between_writes, training_child, wait_progress

SQLITE_ONLY = pytest.mark.parametrize("service", ["sqlite"], indirect=True)  # Postgres: test_fencing, test_outages


def wait_until(check, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


@SQLITE_ONLY
def test_a_torn_newest_checkpoint_falls_back_to_the_one_before(service, api, worker):
    w = worker()
    job_id = api.post("/v1/jobs", json={**FAULT_SPEC, "keep_last": None}).json()["id"]
    wait_until(lambda: len(checkpoints_of(service, job_id)) >= 2, 120, "two checkpoints")
    child = training_child(w)
    os.kill(child, signal.SIGSTOP)  # frozen: no newer checkpoint while the newest is torn
    newest, before = checkpoints_of(service, job_id)[-1], checkpoints_of(service, job_id)[-2]
    path = ArtifactStore(service.storage_url).local_path(newest.parts["full"]["key"])
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    os.kill(child, signal.SIGKILL)
    done = wait_for(api, job_id, timeout=240)
    assert done["state"] == "succeeded" and done["attempt"] == 2, done
    log = [e.message for e in events(service, job_id)]
    assert any(m.startswith(f"skipping checkpoint {newest.id}") for m in log), log
    assert any(m.endswith(f"resuming at step {before.step}") for m in log), log


@SQLITE_ONLY
def test_a_stalled_worker_that_lost_its_lease_comes_back_harmlessly(service, api, worker):
    first = worker(name="a")
    job_id = api.post("/v1/jobs", json=FAULT_SPEC).json()["id"]
    wait_progress(service, job_id, 0, 5)
    pause_between_writes(first.proc.pid, service.home)  # the worker and its child freeze, as a paused VM
    try:
        worker(name="b")
        wait_until(lambda: api.get(f"/v1/jobs/{job_id}").json()["attempt"] == 2, 120, "another worker to take over")
    finally:
        os.killpg(first.proc.pid, signal.SIGCONT)
    done = wait_for(api, job_id, timeout=240)
    assert done["state"] == "succeeded" and done["attempt"] == 2, done
    finals = [c for c in checkpoints_of(service, job_id) if c.final]
    assert len(finals) == 1 and finals[0].step == FAULT_SPEC["steps"]
    assert first.proc.poll() is None  # the stalled worker lives on, its stale child stopped without writing


@SQLITE_ONLY
def test_files_gone_from_the_store_answer_410(api, worker, service):
    worker()
    done = wait_for(api, api.post("/v1/jobs", json=TINY_PRETRAIN).json()["id"])
    checkpoint = api.get(f"/v1/checkpoints/{done['result']['checkpoint']}").json()
    for part in checkpoint["parts"].values():
        ArtifactStore(service.storage_url).local_path(part["key"]).unlink()
    response = api.get(f"/v1/checkpoints/{checkpoint['id']}/download")
    assert response.status_code == 410 and "gone" in response.json()["detail"]
    image = [[0.0] * 8 for _ in range(8)]
    response = api.post("/v1/embeddings", json={"model": checkpoint["id"], "input": [image]})
    assert response.status_code == 410, response.text


def test_readyz_answers_503_without_a_database(tmp_path):
    from api.app import create_app
    from jobs.settings import Settings

    settings = Settings(home=tmp_path, database_url="postgresql+psycopg://nobody@127.0.0.1:1/none",
                        migrate_on_start=False).resolved()
    with TestClient(create_app(settings)) as client:
        assert client.get("/healthz").status_code == 200
        response = client.get("/readyz")
        assert response.status_code == 503 and "database unavailable" in response.json()["detail"]


@SQLITE_ONLY
def test_the_periodic_garbage_collection_runs_in_the_worker(service, worker):
    store = Path(service.storage_url) / "checkpoints" / "ckpt_orphan"
    store.mkdir(parents=True)
    (store / "backbone.safetensors").write_bytes(b"left by a crash")
    settings = service.model_copy(update={"gc_interval": 1.0, "gc_min_age": 0.0})
    from tests.conftest import WorkerProcess

    w = WorkerProcess(settings).start()
    try:
        wait_until(lambda: not store.exists(), 90, "the worker's garbage collection")
    finally:
        w.stop()
