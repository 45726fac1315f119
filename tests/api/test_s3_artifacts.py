"""Checkpoints on an S3 store (a local moto server): downloads stream from the object as it is
read (HEAD and Range too), concurrent first reads of the cache each get the whole verified file,
and the local cache is trimmed, least recently used first, by a thread that runs."""
from __future__ import annotations

import hashlib
import os
import socket
import threading
import time

import pytest
import torch
from fastapi.testclient import TestClient

from api.app import create_app
from jobs import cache, checkpoints
from jobs.db import session_scope
from jobs.ids import new_id
from jobs.storage import store_for
from jobs.tables import DEFAULT_PROJECT, Job
from tests.conftest import make_settings


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def s3_service(tmp_path, monkeypatch):
    """A SQLite service whose artifact store is s3://artifacts on a moto server, with one
    registered checkpoint whose local cached copy is gone (as on an API machine)."""
    pytest.importorskip("boto3")
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    for key, value in {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
                       "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(key, value)
    import boto3

    bucket = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    bucket.create_bucket(Bucket="artifacts")
    settings, _ = make_settings("sqlite", tmp_path / "home")
    settings = settings.model_copy(update={"storage_url": "s3://artifacts", "s3_endpoint_url": endpoint})
    from jobs.migrate import upgrade

    upgrade(settings.database_url)
    store = store_for(settings)
    with session_scope(settings.database_url) as session:
        job = Job(id=new_id("job"), project_id=DEFAULT_PROJECT, kind="pretrain", state="succeeded", spec={},
                  queue="default", result={})
        session.add(job)
        session.flush()
        row = checkpoints.register(session, store, project_id=DEFAULT_PROJECT, job_id=job.id, step=1, final=True,
                                   method="simclr", backbone="small_cnn", dataset_id=None,
                                   trees={"backbone": {"w": torch.arange(300_000, dtype=torch.float32)}}, manifest={})
        info = dict(row.parts["backbone"], id=row.id)
    staged = store.cache / info["key"]
    info["bytes_"] = staged.read_bytes()
    staged.unlink()
    yield settings, store, bucket, info
    server.stop()


def test_download_streams_from_s3_with_head_and_range(s3_service):
    settings, store, _, info = s3_service
    url = f"/v1/checkpoints/{info['id']}/download"
    whole = info["bytes_"]
    with TestClient(create_app(settings)) as api:
        response = api.get(url)
        assert response.status_code == 200 and response.content == whole
        assert response.headers["etag"] == f'"{info["sha256"]}"'
        assert hashlib.sha256(response.content).hexdigest() == info["sha256"]
        assert not (store.cache / info["key"]).exists()  # streamed through, never fetched whole first

        head = api.head(url)
        assert head.status_code == 200 and head.content == b""
        assert int(head.headers["content-length"]) == len(whole) and head.headers["accept-ranges"] == "bytes"

        part = api.get(url, headers={"Range": "bytes=100-199"})
        assert part.status_code == 206 and part.content == whole[100:200]
        assert part.headers["content-range"] == f"bytes 100-199/{len(whole)}"
        tail = api.get(url, headers={"Range": "bytes=-7"})
        assert tail.status_code == 206 and tail.content == whole[-7:]
        beyond = api.get(url, headers={"Range": f"bytes={len(whole)}-"})
        assert beyond.status_code == 416 and beyond.headers["content-range"] == f"bytes */{len(whole)}"
        assert api.get(url, headers={"If-None-Match": f'"{info["sha256"]}"'}).status_code == 304


def test_a_missing_object_is_410(s3_service):
    settings, _, bucket, info = s3_service
    bucket.delete_object(Bucket="artifacts", Key=info["key"])
    with TestClient(create_app(settings)) as api:
        response = api.get(f"/v1/checkpoints/{info['id']}/download")
        assert response.status_code == 410 and "gone" in response.json()["detail"]
        assert api.head(f"/v1/checkpoints/{info['id']}/download").status_code == 410


def test_concurrent_first_reads_of_the_cache_each_get_the_whole_file(s3_service):
    _, store, _, info = s3_service
    paths, errors = [], []
    start = threading.Barrier(8)

    def read() -> None:
        try:
            start.wait()
            path = store.local_path(info["key"])
            paths.append(hashlib.sha256(path.read_bytes()).hexdigest())
        except Exception as exc:  # noqa: BLE001  (reported below)
            errors.append(exc)

    threads = [threading.Thread(target=read) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors and paths == [info["sha256"]] * 8
    folder = (store.cache / info["key"]).parent
    assert [p.name for p in folder.iterdir()] == ["backbone.safetensors"]  # no partial file left behind


def test_trim_removes_least_recently_used_files_but_not_recent_ones(tmp_path):
    now = time.time()
    files = {}
    for name, age, size in [("old/a.bin", 5000, 400), ("old/b.bin", 4000, 400), ("new/c.bin", 10, 400),
                            ("old/.d.bin.x.part", 2000, 10)]:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x" * size)
        os.utime(path, (now - age, now - age))
        files[name] = path
    deleted = cache.trim(tmp_path, max_bytes=500, min_age=900, now=now)
    assert sorted(p.name for p in deleted) == [".d.bin.x.part", "a.bin", "b.bin"]
    assert files["new/c.bin"].exists()  # over the limit still, but used within min_age
    cache.touch(files["new/c.bin"])
    assert cache.trim(tmp_path, max_bytes=0, min_age=900) == []


def test_the_api_trims_its_cache_periodically(s3_service):
    settings, store, _, info = s3_service
    settings = settings.model_copy(update={"cache_interval": 0.2, "cache_max_bytes": 0, "cache_min_age": 0.0})
    with TestClient(create_app(settings)) as api:
        path = store.local_path(info["key"])  # a cached copy, as the model cache makes one
        assert path.exists()
        deadline = time.monotonic() + 15
        while path.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not path.exists(), "the cache-trim thread did not run"
        assert api.get(f"/v1/checkpoints/{info['id']}/download").status_code == 200  # fetched again from S3


def test_the_worker_sweeper_trims_its_cache(sqlite_service):
    from workers.__main__ import sweeper

    settings = sqlite_service.model_copy(update={"sweep_interval": 0.1, "cache_interval": 0.2, "cache_max_bytes": 0,
                                                 "cache_min_age": 0.0, "gc_interval": 0.0})
    from jobs.migrate import upgrade

    upgrade(settings.database_url)
    cached = settings.home / "cache" / "datasets" / "ds_x" / "source.zip"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"x" * 1000)
    stop = threading.Event()
    identity = {"worker_id": "trim-test", "hostname": "h", "queues": ["default"], "devices": []}
    thread = threading.Thread(target=sweeper, args=(settings, stop, identity), daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 15
        while cached.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        stop.set()
        thread.join(10)
    assert not cached.exists(), "the worker's sweeper did not trim the cache"


def test_a_corrupt_cached_copy_is_evicted_and_fetched_again(s3_service):
    settings, store, _, info = s3_service
    cached = store.cache / info["key"]
    cached.parent.mkdir(parents=True, exist_ok=True)
    cached.write_bytes(b"\0" * len(info["bytes_"]))  # as two racing first downloads used to leave it
    with TestClient(create_app(settings)) as api:
        broken = api.post("/v1/embeddings", json={"model": info["id"], "input": [[[0]]]})
        assert broken.status_code == 410 and "sha256" in broken.json()["detail"]
        assert not cached.exists()
        response = api.get(f"/v1/checkpoints/{info['id']}/download")
        assert hashlib.sha256(response.content).hexdigest() == info["sha256"]
