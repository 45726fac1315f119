"""Per-project quotas through HTTP: active jobs answer 429, datasets and stored bytes 403, each
with a message naming the quota, its limit and the usage; GET /v1/usage shows them; racing
submits never pass the quota."""
from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from jobs import checkpoints
from jobs.db import session_scope
from jobs.storage import store_for
from jobs.tables import DEFAULT_PROJECT
from tests.api.tenants import client, project_keys, small_zip, upload
from tests.conftest import TINY_PRETRAIN
from tests.datasets.conftest import stored_files


BOUNDARY = "quota-boundary"


def chunked(data: bytes):
    """A multipart upload sent without Content-Length: its size is known only once it is read."""
    yield (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"d.zip\"\r\n"
           "Content-Type: application/zip\r\n\r\n").encode()
    yield data
    yield f"\r\n--{BOUNDARY}--\r\n".encode()


def test_active_jobs_quota_is_429_per_project_and_frees_when_one_ends(service):
    (_, a), (_, b) = project_keys(service, "a", "b")
    with client(service, auth=True, quota_active_jobs=2) as api:
        ids = [api.post("/v1/jobs", json={**TINY_PRETRAIN, "seed": i}, headers=a).json()["id"] for i in range(2)]
        refused = api.post("/v1/jobs", json={**TINY_PRETRAIN, "seed": 9}, headers=a)
        assert refused.status_code == 429 and refused.headers["retry-after"]
        detail = refused.json()["detail"]
        assert "active-jobs quota" in detail and "2 of its 2" in detail and "DARKMATTER_QUOTA_ACTIVE_JOBS" in detail
        assert api.get("/v1/usage", headers=a).json()["active_jobs"] == {"used": 2, "limit": 2}
        assert api.post("/v1/jobs", json=TINY_PRETRAIN, headers=b).status_code == 201  # B has a quota of its own
        replay = api.post("/v1/jobs", json=TINY_PRETRAIN, headers={**b, "Idempotency-Key": "k"})
        assert replay.status_code == 201
        assert api.post("/v1/jobs", json=TINY_PRETRAIN, headers={**b, "Idempotency-Key": "k"}).status_code == 200
        assert api.post(f"/v1/jobs/{ids[0]}/cancel", headers=a).json()["state"] == "cancelled"
        assert api.post("/v1/jobs", json={**TINY_PRETRAIN, "seed": 9}, headers=a).status_code == 201


def test_racing_submits_never_pass_the_active_jobs_quota(service):
    with client(service, quota_active_jobs=1) as api:
        with ThreadPoolExecutor(4) as pool:
            codes = list(pool.map(lambda i: api.post("/v1/jobs", json={**TINY_PRETRAIN, "seed": i}).status_code,
                                  range(4)))
        assert sorted(codes) == [201, 429, 429, 429]
        assert api.get("/v1/jobs").json()["total"] == 1


def test_datasets_quota_is_403_and_built_ins_count_against_none(service, tmp_path):
    data = small_zip(tmp_path)
    with client(service, quota_datasets=1) as api:
        assert upload(api, data).status_code == 201
        assert api.post("/v1/datasets", json={"builtin": "digits"}).status_code == 201
        for refused in (upload(api, data), api.post("/v1/datasets", json={"uri": str(tmp_path), "format": "folder"})):
            assert refused.status_code == 403
            detail = refused.json()["detail"]
            assert "datasets quota" in detail and "1 of its 1" in detail and "DARKMATTER_QUOTA_DATASETS" in detail
        assert len({path.split("/")[1] for path in stored_files(service)}) == 1  # the refused upload left nothing
        usage = api.get("/v1/usage").json()
        assert usage["datasets"] == {"used": 1, "limit": 1}


def test_stored_bytes_quota_is_403_for_uploads_and_for_jobs_that_store_files(service, tmp_path):
    data = small_zip(tmp_path)
    limit = len(data) + 2000  # one upload (with its multipart framing), not two
    with client(service, quota_stored_bytes=limit) as api:
        assert upload(api, data).status_code == 201
        usage = api.get("/v1/usage").json()["stored_bytes"]
        assert usage["used"] == len(data) and usage["limit"] == limit and usage["by_kind"]["datasets"] == len(data)
        refused = upload(api, data)  # refused on its Content-Length, before it is read
        assert refused.status_code == 403
        assert "stored-bytes quota" in refused.json()["detail"] and f"{limit:,} bytes" in refused.json()["detail"]
        refused = api.post("/v1/datasets", content=chunked(data), headers={"content-type": f"multipart/form-data; "
                                                                                          f"boundary={BOUNDARY}"})
        assert refused.status_code == 403 and f"this request adds {len(data) / 1024:.1f} KiB" in refused.json()["detail"]
        assert len({path.split("/")[1] for path in stored_files(service)}) == 1  # counted once read, then removed
        job = api.post("/v1/jobs", json=TINY_PRETRAIN)
        assert job.status_code == 201  # under the quota still
        with session_scope(service.database_url) as session:  # its checkpoint takes the project past it
            checkpoints.register(session, store_for(service), project_id=DEFAULT_PROJECT, job_id=job.json()["id"],
                                 step=1, final=True, method="simclr", backbone="small_cnn", dataset_id=None,
                                 trees={"backbone": {"w": torch.zeros(1000)}}, manifest={})
        used = api.get("/v1/usage").json()["stored_bytes"]
        assert used["used"] > limit and used["by_kind"]["checkpoints"] > 4000
        refused = api.post("/v1/jobs", json={**TINY_PRETRAIN, "seed": 1})
        assert refused.status_code == 403 and "stored-bytes quota" in refused.json()["detail"]
        assert f"({used['used']:,} bytes)" in refused.json()["detail"]
        evaluate = {"kind": "evaluate", "dataset": "digits", "checkpoint": "raw-pixels"}
        assert api.post("/v1/jobs", json=evaluate).status_code == 201  # stores nothing the quota counts


def test_zero_means_unlimited(service, tmp_path):
    with client(service, quota_datasets=0, quota_stored_bytes=0, quota_active_jobs=0) as api:
        assert all(upload(api, small_zip(tmp_path, n)).status_code == 201 for n in (10, 11))
        usage = api.get("/v1/usage").json()
        assert usage["datasets"] == {"used": 2, "limit": 0} and usage["active_jobs"]["limit"] == 0


def test_the_client_raises_a_quota_429_at_once_and_reads_usage(service):
    from client import Client
    from client.errors import RateLimited

    with client(service, quota_active_jobs=1) as api:
        sdk = Client()
        sdk.http = api
        sdk.submit(TINY_PRETRAIN)
        started = time.monotonic()
        with pytest.raises(RateLimited) as refused:
            sdk.submit({**TINY_PRETRAIN, "seed": 1})
        assert time.monotonic() - started < 5  # Retry-After 60 is past what the client sleeps: no retries
        assert refused.value.retry_after == 60 and "active-jobs quota" in str(refused.value)
        assert sdk.usage()["active_jobs"] == {"used": 1, "limit": 1}
