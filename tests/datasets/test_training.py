"""Uploaded and streamed datasets train on a real worker: scan, pretrain, auto-eval on the
dataset's own labels, and checkpoints that name the dataset and its content hash. s3:// goes
through a local moto server."""
from __future__ import annotations

import hashlib
import socket
import time

import pytest

from tests.conftest import TINY_PRETRAIN, WorkerProcess, wait_for
from tests.datasets.make import digits_zip, shards

TINY = {**TINY_PRETRAIN, "batch_size": 32, "steps": 4}


def wait_scanned(client, dataset_id: str, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        row = client.get(f"/v1/datasets/{dataset_id}").json()
        if row["state"] not in ("pending", "scanning"):
            return row
        time.sleep(0.3)
    raise AssertionError(f"dataset {dataset_id} was not scanned in {timeout}s")


@pytest.fixture
def worker_process(small_service):
    started = []

    def start() -> WorkerProcess:
        started.append(WorkerProcess(small_service, name="ds").start())
        return started[-1]

    yield start
    for process in started:
        process.stop()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def s3(monkeypatch):
    """A moto S3 server on localhost with one bucket; the endpoint reaches workers through the env."""
    boto3 = pytest.importorskip("boto3")
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    for key, value in {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1",
                       "DARKMATTER_S3_ENDPOINT_URL": endpoint}.items():
        monkeypatch.setenv(key, value)
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    client.create_bucket(Bucket="data")
    yield client, endpoint
    server.stop()


def test_s3_zip_is_scanned_through_the_endpoint(client, small_service, s3, tmp_path):
    from workers.scan import run_scan

    bucket, endpoint = s3
    bucket.put_object(Bucket="data", Key="sets/d.zip", Body=digits_zip(tmp_path / "d.zip", n=30).read_bytes())
    created = client.post("/v1/datasets", json={"uri": "s3://data/sets/d.zip", "format": "zip"}).json()
    assert run_scan(created["id"], small_service.model_copy(update={"s3_endpoint_url": endpoint})) == "ready"
    row = client.get(f"/v1/datasets/{created['id']}").json()
    assert row["n_items"] + row["n_test"] == 30 and row["n_classes"] == 3
    missing = client.post("/v1/datasets", json={"uri": "s3://data/nope.zip", "format": "zip"}).json()
    assert run_scan(missing["id"], small_service.model_copy(update={"s3_endpoint_url": endpoint})) == "invalid"
    error = client.get(f"/v1/datasets/{missing['id']}").json()["error"]
    assert error == "cannot read it from S3: missing, or not readable with the service's credentials"


def test_uploaded_zip_and_s3_shards_train_on_one_worker(client, worker_process, s3, tmp_path):
    """One worker (they are slow to start) scans and trains both: an uploaded zip of PNGs in class
    folders, with auto-eval on its labels, and WebDataset shards on S3, streamed (auto-eval on the
    first items of the stream)."""
    worker = worker_process()
    data = digits_zip(tmp_path / "d.zip", n=150, classes=3).read_bytes()
    uploaded = client.post("/v1/datasets", files={"file": ("digits.zip", data)}).json()
    bucket, _ = s3
    for path in shards(tmp_path, n_shards=3, per_shard=40):
        bucket.put_object(Bucket="data", Key=f"wds/{path.name}", Body=path.read_bytes())
    streamed = client.post("/v1/datasets", json={"uri": "s3://data/wds/shard-{000..002}.tar", "format": "webdataset"})
    assert streamed.status_code == 201, streamed.text

    ready = wait_scanned(client, uploaded["id"])
    assert ready["state"] == "ready", (ready, worker.output()[-3000:])
    job = client.post("/v1/jobs", json={**TINY, "dataset": ready["id"]})
    assert job.status_code == 201, job.text
    done = wait_for(client, job.json()["id"], timeout=180)
    assert done["state"] == "succeeded", (done, worker.output()[-3000:])
    checkpoint = client.get(f"/v1/checkpoints/{done['result']['checkpoint']}").json()
    assert checkpoint["manifest"]["dataset"] == {"id": ready["id"], "content_hash": hashlib.sha256(data).hexdigest()}
    assert checkpoint["manifest"]["normalization"] == {"mean": ready["stats"]["mean"], "std": ready["stats"]["std"]}
    scores = client.get("/v1/scores", params={"dataset": ready["id"]}).json()["data"]
    knn = [s for s in scores if s["protocol"] == "knn" and s["checkpoint_id"] == checkpoint["id"]]
    assert knn and 1 / 3 < knn[0]["value"] <= 1.0  # three classes from the folder names: above chance

    shards_ready = wait_scanned(client, streamed.json()["id"])
    assert shards_ready["state"] == "ready" and shards_ready["n_items"] == 120, shards_ready
    job = client.post("/v1/jobs", json={**TINY, "dataset": shards_ready["id"]}).json()
    done = wait_for(client, job["id"], timeout=180)
    assert done["state"] == "succeeded" and done["step"] == 4, (done, worker.output()[-3000:])
    checkpoint = client.get(f"/v1/checkpoints/{done['result']['checkpoint']}").json()
    assert checkpoint["manifest"]["dataset"] == {"id": shards_ready["id"], "content_hash": shards_ready["content_hash"]}
    scores = client.get("/v1/scores", params={"dataset": shards_ready["id"]}).json()["data"]
    mine = {s["protocol"] for s in scores if s["checkpoint_id"] == checkpoint["id"]}
    assert mine == {"knn", "linear"}  # the default auto-evaluations, on a head sample
