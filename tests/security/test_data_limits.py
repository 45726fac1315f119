"""Issue 20's data findings, each reproduced as written there: it answers 4xx (or ends the dataset
`invalid` with the reason) quickly, with bounded memory, while /healthz stays fast."""
from __future__ import annotations

import base64
import io
import json
import tarfile
import threading
import time
import zipfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from jobs import datasets, images
from jobs.db import session_scope
from jobs.tables import DEFAULT_PROJECT, Dataset
from tests.conftest import make_settings
from tests.datasets.make import digits_zip, png, shards
from workers.scan import run_scan

FAST = 1.0  # seconds: what "answers at once" means here, on a loaded 2-core machine


@pytest.fixture
def roots(tmp_path) -> tuple[Path, Path]:
    allowed, other = tmp_path / "allowed", tmp_path / "other-team"
    allowed.mkdir()
    other.mkdir()
    return allowed, other


@pytest.fixture
def service(tmp_path, roots, monkeypatch):
    monkeypatch.setenv("DARKMATTER_DATA_ROOTS", str(roots[0]))  # scan children inherit it
    settings, _ = make_settings("sqlite", tmp_path / "home")
    settings = settings.model_copy(update={"data_roots": str(roots[0]), "max_upload_bytes": 8 << 20})
    from jobs.migrate import upgrade

    upgrade(settings.database_url)
    yield settings
    from jobs.db import get_engine

    get_engine(settings.database_url).dispose()


def client_for(settings):
    from fastapi.testclient import TestClient

    from api.app import create_app

    return TestClient(create_app(settings))


@pytest.fixture
def client(service):
    with client_for(service) as test_client:
        yield test_client


@contextmanager
def healthz_watch(client, limit: float = 2 * FAST):
    """Poll /healthz from another thread while the block runs; its slowest answer must be fast."""
    latencies, done = [], threading.Event()

    def poll():
        while not done.is_set():
            started = time.perf_counter()
            assert client.get("/healthz").status_code == 200
            latencies.append(time.perf_counter() - started)
            time.sleep(0.02)

    thread = threading.Thread(target=poll)
    thread.start()
    try:
        yield latencies
    finally:
        done.set()
        thread.join()
    assert latencies and max(latencies) < limit, f"/healthz took up to {max(latencies):.2f}s"


def peak_rss_reset() -> None:
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM (Linux >= 4.0)


def peak_rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def upload(client, filename: str, data: bytes):
    return client.post("/v1/datasets", files={"file": (filename, data, "application/octet-stream")})


def row(settings, dataset_id: str) -> Dataset:
    with session_scope(settings.database_url) as session:
        return session.get(Dataset, dataset_id)


# -- the `::` allowlist bypass ---------------------------------------------------------------------

def test_a_shard_item_holding_double_colon_is_refused(client, roots):
    allowed, other = roots
    shards(other, n_shards=1)  # the other team's shard-000.tar
    body = {"uri": [f"{allowed}/x.tar::{other}/shard-000.tar"], "format": "webdataset"}
    started = time.perf_counter()
    response = client.post("/v1/datasets", json=body)
    elapsed = time.perf_counter() - started
    assert response.status_code == 422 and "'::'" in response.json()["detail"], response.text
    assert elapsed < FAST
    assert client.get("/v1/datasets").json()["data"] == []


def test_the_worker_rechecks_every_shard_against_the_allowed_roots(service, roots):
    """A row that names a path outside the project's sources (stored before the fix, or a source
    the operator removed since) is never read: the scan ends invalid, and so does a stream."""
    allowed, other = roots
    shards(other, n_shards=1)
    shards(allowed, n_shards=1)
    with session_scope(service.database_url) as session:
        session.add(Dataset(id="ds_smuggled", project_id=DEFAULT_PROJECT, name="x", format="webdataset",
                            uri=f"{allowed}/shard-000.tar::{other}/shard-000.tar", state="pending",
                            stats={"options": {}}))
    assert run_scan("ds_smuggled", service) == "invalid"
    assert "not under an allowed" in row(service, "ds_smuggled").error
    stream_row = Dataset(id="ds_stream", project_id=DEFAULT_PROJECT, format="webdataset", uri="",
                         stats={"shards": [f"{other}/shard-000.tar"], "image_size": 8, "channels": 1})
    with pytest.raises(datasets.DatasetUnavailable, match="not under an allowed"):
        next(images.stream(service, stream_row).raw_samples(0))


# -- text models and their size bounds ----------------------------------------------------------------

def text_dataset(client, settings) -> str:
    lines = [json.dumps({"text": f"sentence number {i} about {w}", "label": w})
             for i in range(60) for w in ("cats", "dogs")]
    response = upload(client, "c.jsonl", "\n".join(lines).encode())
    assert response.status_code == 201, response.text
    assert run_scan(response.json()["id"], settings) == "ready"
    return response.json()["id"]


def test_text_models_get_the_image_models_size_bounds(client, service):
    dataset = text_dataset(client, service)
    small = {"batch_size": 8, "tokenizer": {"vocab_size": 60}}
    cases = [
        ({"kind": "pretrain", "method": "mlm", "dataset": dataset, **small,
          "backbone_options": {"dim": 8192, "depth": 64, "heads": 64}}, "dim must be an integer from 1 to 4096"),
        ({"kind": "pretrain", "method": "mlm", "dataset": dataset, **small,
          "backbone_options": {"dim": 4096, "depth": 64, "heads": 64}}, "DARKMATTER_MAX_MODEL_PARAMETERS"),
        ({"kind": "evaluate", "checkpoint": "random-init", "dataset": dataset, "backbone": "text_tiny",
          "backbone_options": {"depth": 4000}}, "depth must be an integer from 1 to 64"),
        ({"kind": "evaluate", "checkpoint": "random-init", "dataset": dataset, "backbone": "text_base",
          "backbone_options": {"dim": 4096, "depth": 64, "heads": 64}}, "DARKMATTER_MAX_MODEL_PARAMETERS"),
    ]
    client.post("/v1/jobs", json=cases[0][0])  # the process's first text submit imports the text stack (seconds)
    with healthz_watch(client):
        for spec, message in cases:
            started = time.perf_counter()
            response = client.post("/v1/jobs", json=spec)
            elapsed = time.perf_counter() - started
            assert response.status_code == 422 and message in json.dumps(response.json()), response.text
            assert elapsed < FAST, (spec, elapsed)
    small = client.post("/v1/jobs", json={"kind": "pretrain", "method": "mlm", "dataset": dataset, "steps": 2,
                                          "batch_size": 8, "tokenizer": {"vocab_size": 60},
                                          "backbone_options": {"dim": 32, "depth": 1, "heads": 2}})
    assert small.status_code == 201, small.text  # a model within the bounds is still accepted


def test_a_text_model_over_the_parameter_cap_is_refused_by_its_computed_size(service, client):
    capped = service.model_copy(update={"max_model_parameters": 1_000_000})
    dataset = text_dataset(client, service)
    with client_for(capped) as small:
        response = small.post("/v1/jobs", json={"kind": "pretrain", "method": "mlm", "dataset": dataset,
                                                "backbone": "text_small", "batch_size": 8,
                                                "tokenizer": {"vocab_size": 60}})
    assert response.status_code == 422, response.text
    assert "parameters" in response.json()["detail"] and "1,000,000" in response.json()["detail"]


# -- archives: listed in the scan's capped child, every member counted -----------------------------

def directories_tar_gz(n: int) -> bytes:
    """A tar.gz of n empty directories, its ustar headers built by hand (tarfile takes ~20 s for 300,000)."""
    import gzip

    template = bytearray(tarfile.TarInfo("x").tobuf(tarfile.USTAR_FORMAT))
    template[0:100] = bytes(100)
    template[148:156] = b" " * 8
    template[156:157] = tarfile.DIRTYPE
    base = sum(template)
    headers = []
    for i in range(n):
        name = f"d{i}/".encode()
        header = bytearray(template)
        header[0:len(name)] = name
        header[148:156] = b"%06o\0 " % (base + sum(name))
        headers.append(bytes(header))
    return gzip.compress(b"".join(headers) + bytes(1024), compresslevel=6, mtime=0)


def test_a_tar_of_300000_directories_costs_the_api_nothing_and_the_scan_counts_them(service, client, monkeypatch):
    data = directories_tar_gz(300_000)
    assert len(data) < 3 << 20  # a small upload: about 2 MB
    peak_rss_reset()
    before = peak_rss()
    with healthz_watch(client):
        started = time.perf_counter()
        response = upload(client, "dirs.tar.gz", data)
        elapsed = time.perf_counter() - started
    assert response.status_code == 201, response.text  # no member is listed in the API process
    assert elapsed < 2.0, elapsed
    assert peak_rss() - before < 64 << 20, peak_rss() - before
    monkeypatch.setenv("DARKMATTER_MAX_ARCHIVE_MEMBERS", "20000")  # read by the scan's child process
    started = time.perf_counter()
    assert run_scan(response.json()["id"], service) == "invalid"
    assert "more than 20000 members" in row(service, response.json()["id"]).error
    assert time.perf_counter() - started < 30  # a child process that imports torch, then 20,000 headers


def test_a_zips_entry_count_is_checked_from_its_last_record(service, client, tmp_path):
    path = tmp_path / "many.zip"
    with zipfile.ZipFile(path, "w") as archive:
        for i in range(1001):
            archive.writestr(f"d{i}/", b"")
    capped = service.model_copy(update={"max_archive_members": 1000})
    with client_for(capped) as small:
        started = time.perf_counter()
        response = upload(small, "many.zip", path.read_bytes())
    assert response.status_code == 422 and "1,001 entries; at most 1,000" in response.text, response.text
    assert time.perf_counter() - started < FAST


def test_zip64_entry_counts_are_read(tmp_path):
    from core.data.archives import zip_entry_count

    path = tmp_path / "zip64.zip"
    with zipfile.ZipFile(path, "w") as archive:
        for i in range(70_000):  # past 65,535: the count lives in the zip64 record
            archive.writestr(f"{i}", b"")
    assert zip_entry_count(path) == 70_000


def test_concurrent_uploads_of_one_project_get_429_with_retry_after(service):
    limited = service.model_copy(update={"max_uploads_per_project": 1})
    empty_zip = b"PK\x05\x06" + b"\0" * 18
    with client_for(limited) as client:
        assert upload(client, "a.zip", empty_zip).status_code == 201
        with client.app.state.slots["uploads"].hold(DEFAULT_PROJECT):  # an upload still arriving
            started = time.perf_counter()
            response = upload(client, "b.zip", empty_zip)
            assert time.perf_counter() - started < FAST
        assert response.status_code == 429 and int(response.headers["retry-after"]) > 0, response.text
        assert "at most 1 at once" in response.json()["detail"]
        assert upload(client, "c.zip", empty_zip).status_code == 201  # the slot is free again


def test_the_service_wide_cap_counts_every_project():
    from fastapi import HTTPException

    from api.concurrency import Slots

    slots = Slots("uploads", total=2, per_project=1)
    with slots.hold("a"), slots.hold("b"):
        with pytest.raises(HTTPException) as refused:
            with slots.hold("c"):
                pass
        assert refused.value.status_code == 429 and "its limit" in refused.value.detail
    with slots.hold("c"):
        pass


# -- images: side and aspect caps, single-item reads ------------------------------------------------

def test_tiny_pngs_of_absurd_aspect_are_listed_invalid_not_blown_up(service, client, tmp_path):
    wide = png(np.zeros((10, 8000), np.uint8))
    assert len(wide) < 400
    path = tmp_path / "wide.zip"
    with zipfile.ZipFile(path, "w") as archive:
        for i in range(4):
            archive.writestr(f"{i}.png", wide)
    response = upload(client, "wide.zip", path.read_bytes())
    assert response.status_code == 201
    started = time.perf_counter()
    assert run_scan(response.json()["id"], service) == "invalid"
    scanned = row(service, response.json()["id"])
    assert "no readable images (4 unreadable" in scanned.error and "aspect ratio over 16:1" in scanned.error
    assert time.perf_counter() - started < 20


def test_large_images_are_stored_at_most_1024_px_and_items_are_read_one_by_one(service, client, tmp_path, monkeypatch):
    big = png(np.full((1100, 2000), 200, np.uint8))
    path = tmp_path / "big.zip"
    with zipfile.ZipFile(path, "w") as archive:
        for i in range(3):
            archive.writestr(f"{i}.png", big)
    kept = upload(client, "big.zip", path.read_bytes()).json()["id"]  # by default: aspect kept, short side 256
    assert run_scan(kept, service) == "ready"
    stats = client.get(f"/v1/datasets/{kept}").json()["stats"]
    assert stats["stored_short_side"] == 256 and stats["canvas"] == [256, 341] and stats["image_size"] == 224
    assert Image.open(io.BytesIO(client.get(f"/v1/datasets/{kept}/items/1").content)).size == (341, 256)  # whole
    dataset_id = upload(client, "big.zip", path.read_bytes()).json()["id"]  # squashed square: the 1024 cap
    monkeypatch.setenv("DARKMATTER_STORE_SHORT_SIDE", "0")  # read by the scan's child process
    assert run_scan(dataset_id, service) == "ready"
    ready = client.get(f"/v1/datasets/{dataset_id}").json()
    assert ready["stats"]["image_size"] == 1024 and ready["stats"]["sizes"] == {"2000x1100": 3}
    monkeypatch.setattr(images, "load", lambda *a, **k: pytest.fail("the API loaded the whole dataset"))
    item = client.get(f"/v1/datasets/{dataset_id}/items/1")
    assert item.status_code == 200 and item.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(item.content)).size == (1024, 1024)
    assert client.get(f"/v1/datasets/{dataset_id}/items/2").status_code == 404  # 2 train, 1 test
    assert client.get(f"/v1/datasets/{dataset_id}/items/0?split=test").status_code == 200


def test_single_item_reads_match_the_whole_arrays(service, client, tmp_path):
    zipped = digits_zip(tmp_path / "d.zip", n=30)
    dataset_id = upload(client, "d.zip", zipped.read_bytes()).json()["id"]
    assert run_scan(dataset_id, service) == "ready"
    from jobs.storage import store_for

    dataset = row(service, dataset_id)
    train, test = images.load(dataset, store_for(service))
    for split, data in (("train", train), ("test", test)):
        for index in (0, len(data) - 1):
            image, count = images.read_item(dataset, store_for(service), split, index)
            assert count == len(data) and np.array_equal(image, data.images[index].numpy())
        assert images.read_item(dataset, store_for(service), split, len(data))[0] is None


# -- Pillow formats -----------------------------------------------------------------------------------

EPS = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\nnewpath 0 0 moveto 8 8 lineto stroke\nshowpage\n%%EOF\n"


def test_eps_is_not_an_embedding_input_and_is_unreadable_in_a_scan(service, client, tmp_path):
    from tests.security.test_expensive_routes import checkpoint

    body = {"model": checkpoint(service), "input": [base64.b64encode(EPS).decode()]}
    response = client.post("/v1/embeddings", json=body)  # /v1/neighbors decodes its queries the same way
    assert response.status_code == 422 and "accepted formats" in response.text, response.text
    path = tmp_path / "eps.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("a.eps", EPS)
        archive.writestr("b.png", png(np.zeros((8, 8), np.uint8)))
    dataset_id = upload(client, "eps.zip", path.read_bytes()).json()["id"]
    assert run_scan(dataset_id, service) == "ready"
    scanned = row(service, dataset_id)
    assert scanned.stats["n_unreadable"] == 1 and scanned.stats["unreadable"][0]["path"] == "a.eps"
