"""DELETE for datasets, checkpoints and jobs through HTTP: rows and artifact files go, scores go
with what they measured, the loaded model is dropped; 409 while a queued or running job uses the
object, 403 for a shared built-in, and 404 for another project's key (which learns nothing)."""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select

from jobs import lifecycle, scores
from jobs.db import session_scope
from jobs.features import feature_key
from jobs.tables import Checkpoint, Job, JobEvent, Score
from tests.api.test_s3_artifacts import s3_service  # noqa: F401 (a fixture)
from tests.api.tenants import client, project_keys, real_checkpoint, small_zip, upload
from tests.conftest import TINY_PRETRAIN
from jobs import datasets as dataset_rows
from workers.scan import scan_here

PIXELS = [[0] * 8 for _ in range(8)]


def scan_claimed(dataset_id: str, settings) -> str:
    """Scan a dataset here, as a worker does: claim it (pending -> scanning), then scan."""
    with session_scope(settings.database_url) as session:
        assert dataset_rows.claim_scan(session, dataset_id, "test")
    return scan_here(dataset_id, settings)


@pytest.fixture
def world(service, tmp_path):
    """Projects A and B (auth on). A has an uploaded and scanned dataset, a queued pretrain job
    with a loadable checkpoint, and a kNN score of that checkpoint on the dataset."""
    (project_a, a), (_, b) = project_keys(service, "a", "b")
    with client(service, auth=True) as api:
        dataset = upload(api, small_zip(tmp_path, 40), a).json()["id"]
        assert scan_claimed(dataset, service) == "ready"
        job = api.post("/v1/jobs", json=TINY_PRETRAIN, headers=a).json()["id"]
    checkpoint = real_checkpoint(service, project_a, job)
    with session_scope(service.database_url) as session:
        scores.record(session, project_id=project_a, dataset_id=dataset, protocol="knn", values={"top1": 0.5},
                      checkpoint_id=checkpoint)
    return {"a": a, "b": b, "project": project_a, "dataset": dataset, "job": job, "checkpoint": checkpoint,
            "store": Path(service.storage_url)}


def rows(settings, table, *where) -> int:
    with session_scope(settings.database_url) as session:
        return session.scalar(select(func.count()).select_from(table).where(*where))


def timed(call):
    started = time.perf_counter()
    response = call()
    return response, time.perf_counter() - started


def cached_features(store: Path, source: str, dataset_id: str) -> Path:
    """A file where the feature cache (jobs/features.py) keeps a source's features of a dataset."""
    path = store / feature_key(source, dataset_id, "0123456789abcdef", "train")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"features")
    return path


def to_state(settings, job_id: str, state: str) -> None:
    """Put a job in `state` as a worker would: claimed, then finished (no worker needed)."""
    with session_scope(settings.database_url) as session:
        assert lifecycle.claim(session, job_id, "w-test")
        if state != lifecycle.RUNNING:
            assert lifecycle.finish(session, job_id, "w-test", state)


def test_a_checkpoint_is_deleted_with_its_files_scores_and_loaded_model_once_nothing_uses_it(service, world):
    a, ckpt, job = world["a"], world["checkpoint"], world["job"]
    with client(service, auth=True) as api:
        busy = api.delete(f"/v1/checkpoints/{ckpt}", headers=a)
        assert busy.status_code == 409 and f"belongs to job {job}, which is queued" in busy.json()["detail"]
        api.post(f"/v1/jobs/{job}/cancel", headers=a)
        assert api.post("/v1/embeddings", json={"model": ckpt, "input": [PIXELS]}, headers=a).status_code == 200
        assert ckpt in api.app.state.model_cache.models
        index_spec = {"kind": "embed-index", "checkpoint": ckpt, "dataset": world["dataset"]}
        reader = api.post("/v1/jobs", json=index_spec, headers=a).json()["id"]
        busy = api.delete(f"/v1/checkpoints/{ckpt}", headers=a)
        assert busy.status_code == 409 and f"used by job {reader} (queued)" in busy.json()["detail"]
        to_state(service, reader, "succeeded")
        busy = api.delete(f"/v1/checkpoints/{ckpt}", headers=a)
        assert busy.status_code == 409 and f"serves the index of job {reader}" in busy.json()["detail"]
        assert api.delete(f"/v1/jobs/{reader}", headers=a).status_code == 200

        features = cached_features(world["store"], ckpt, world["dataset"])
        deleted, seconds = timed(lambda: api.delete(f"/v1/checkpoints/{ckpt}", headers=a))
        assert deleted.status_code == 200, deleted.text
        assert deleted.json() == {"id": ckpt, "object": "checkpoint", "deleted": True, "checkpoints_deleted": [ckpt],
                                  "scores_deleted": 1}
        print(f"DELETE /v1/checkpoints: {seconds * 1000:.1f} ms")
        assert not (world["store"] / "checkpoints" / ckpt).exists() and not features.exists()
        assert rows(service, Checkpoint, Checkpoint.id == ckpt) == rows(service, Score, Score.checkpoint_id == ckpt) == 0
        assert ckpt not in api.app.state.model_cache.models
        assert api.get(f"/v1/checkpoints/{ckpt}", headers=a).status_code == 404
        assert api.post("/v1/embeddings", json={"model": ckpt, "input": [PIXELS]}, headers=a).status_code == 404
        assert api.delete(f"/v1/checkpoints/{ckpt}", headers=a).status_code == 404


def test_a_job_is_deleted_once_ended_with_its_events_checkpoints_and_scores(service, world):
    a, ckpt, job = world["a"], world["checkpoint"], world["job"]
    with client(service, auth=True) as api:
        to_state(service, job, "running")
        busy = api.delete(f"/v1/jobs/{job}", headers=a)
        assert busy.status_code == 409 and "running; cancel it first" in busy.json()["detail"]
        with session_scope(service.database_url) as session:
            lifecycle.finish(session, job, "w-test", "succeeded")
        assert api.get("/v1/jobs", headers=a).json()["total"] == 1
        deleted, seconds = timed(lambda: api.delete(f"/v1/jobs/{job}", headers=a))
        assert deleted.status_code == 200, deleted.text
        print(f"DELETE /v1/jobs: {seconds * 1000:.1f} ms")
        assert deleted.json()["checkpoints_deleted"] == [ckpt] and deleted.json()["scores_deleted"] == 1
        assert api.get(f"/v1/jobs/{job}", headers=a).status_code == 404
        assert api.get("/v1/jobs", headers=a).json()["total"] == 0
        assert api.get(f"/v1/checkpoints/{ckpt}", headers=a).status_code == 404
    assert not (world["store"] / "checkpoints" / ckpt).exists()
    for table, where in ((Job, Job.id == job), (JobEvent, JobEvent.job_id == job), (Checkpoint, Checkpoint.job_id == job),
                         (Score, Score.checkpoint_id == ckpt)):
        assert rows(service, table, where) == 0, table


def test_a_dataset_is_deleted_with_its_files_and_scores_once_no_job_uses_it(service, world, tmp_path):
    a, dataset = world["a"], world["dataset"]
    with client(service, auth=True) as api:
        assert (world["store"] / "datasets" / dataset / "arrays.npz").exists()
        used = api.get("/v1/usage", headers=a).json()["stored_bytes"]["by_kind"]["datasets"]
        assert used > (world["store"] / "datasets" / dataset / "arrays.npz").stat().st_size
        evaluate = {"kind": "evaluate", "dataset": dataset, "checkpoint": "raw-pixels"}
        reader = api.post("/v1/jobs", json=evaluate, headers=a).json()["id"]
        busy = api.delete(f"/v1/datasets/{dataset}", headers=a)
        assert busy.status_code == 409 and f"used by job {reader} (queued)" in busy.json()["detail"]
        api.post(f"/v1/jobs/{reader}/cancel", headers=a)

        features = cached_features(world["store"], "raw-pixels", dataset)
        kept = cached_features(world["store"], "raw-pixels", "ds_another")
        deleted, seconds = timed(lambda: api.delete(f"/v1/datasets/{dataset}", headers=a))
        assert deleted.status_code == 200 and deleted.json()["scores_deleted"] == 1, deleted.text
        print(f"DELETE /v1/datasets: {seconds * 1000:.1f} ms")
        assert not (world["store"] / "datasets" / dataset).exists()
        assert not features.exists() and kept.exists()
        assert rows(service, Score, Score.dataset_id == dataset) == 0
        assert api.get("/v1/usage", headers=a).json()["stored_bytes"]["by_kind"]["datasets"] == 0
        assert api.get(f"/v1/datasets/{dataset}", headers=a).status_code == 404
        assert api.post("/v1/jobs", json=evaluate, headers=a).status_code == 404

        pending = upload(api, small_zip(tmp_path, 12), a).json()["id"]  # no worker: its scan has not run
        busy = api.delete(f"/v1/datasets/{pending}", headers=a)
        assert busy.status_code == 409 and "being scanned" in busy.json()["detail"]
        builtin = api.post("/v1/datasets", json={"builtin": "digits"}, headers=a).json()["id"]
        shared = api.delete(f"/v1/datasets/{builtin}", headers=a)
        assert shared.status_code == 403 and "shared by every project" in shared.json()["detail"]
        assert api.get(f"/v1/datasets/{builtin}", headers=a).status_code == 200


def test_another_projects_key_can_neither_delete_nor_see_the_objects(service, world):
    a, b = world["a"], world["b"]
    api_paths = [f"/v1/datasets/{world['dataset']}", f"/v1/checkpoints/{world['checkpoint']}", f"/v1/jobs/{world['job']}"]
    with client(service, auth=True) as api:
        api.post(f"/v1/jobs/{world['job']}/cancel", headers=a)  # nothing in use: only the project stops B
        for path in api_paths:
            refused = api.delete(path, headers=b)
            assert refused.status_code == 404 and "not found" in refused.json()["detail"], path
            assert api.get(path, headers=a).status_code == 200, path
        assert api.delete(api_paths[0]).status_code == 401
        theirs, ours = api.get("/v1/usage", headers=b).json(), api.get("/v1/usage", headers=a).json()
        assert theirs["datasets"]["used"] == 0 and theirs["stored_bytes"]["used"] == 0
        assert theirs["active_jobs"]["used"] == 0
        assert ours["datasets"]["used"] == 1 and ours["stored_bytes"]["by_kind"]["checkpoints"] > 0
    assert (world["store"] / "checkpoints" / world["checkpoint"]).exists()


@pytest.fixture
def cli(sqlite_service, monkeypatch):
    """`darkmatter` through typer's runner, its client talking to an in-process API (SQLite, auth off)."""
    from typer.testing import CliRunner

    from client import Client
    from client.cli import app, checkpoints as cli_checkpoints, datasets as cli_datasets, jobs as cli_jobs
    from client.cli import results as cli_results
    from jobs.migrate import upgrade

    upgrade(sqlite_service.database_url)
    with client(sqlite_service) as api:
        def connect(url, api_key):
            sdk = Client(url, api_key)
            sdk.http = api
            return sdk

        for module in (cli_checkpoints, cli_datasets, cli_jobs, cli_results):
            monkeypatch.setattr(module, "connect", connect)

        def run(*args: str, code: int = 0) -> str:
            result = CliRunner().invoke(app, list(args), env={"COLUMNS": "200"})
            assert result.exit_code == code, (args, result.output)
            assert "Traceback" not in result.output
            return result.output

        yield run, api, sqlite_service


def test_cli_rm_needs_yes_and_says_what_went_or_why_not(cli, tmp_path):
    run, api, settings = cli
    dataset = upload(api, small_zip(tmp_path)).json()["id"]
    assert scan_claimed(dataset, settings) == "ready"
    job = api.post("/v1/jobs", json=TINY_PRETRAIN).json()["id"]
    checkpoint = real_checkpoint(settings, "prj_default", job)
    assert "pass --yes" in run("datasets", "rm", dataset, code=2)  # no terminal to ask on
    assert f"{dataset}: deleted" in run("datasets", "rm", dataset, "--yes")
    refused = run("jobs", "rm", job, "--yes", code=1)
    assert "HTTP 409" in refused and "cancel it first" in refused
    assert "HTTP 409" in run("checkpoints", "rm", checkpoint, "-y", code=1)
    api.post(f"/v1/jobs/{job}/cancel")
    assert f"{checkpoint}: deleted" in run("checkpoints", "rm", checkpoint, "-y")
    assert json.loads(run("jobs", "rm", job, "--yes", "--json"))["deleted"] is True
    assert "HTTP 404" in run("jobs", "rm", job, "--yes", code=1)
    assert "unlimited" not in run("usage") and json.loads(run("usage", "--json"))["datasets"]["used"] == 0


def test_a_checkpoint_on_s3_is_deleted_from_the_bucket_and_the_local_cache(s3_service):
    settings, store, bucket, info = s3_service
    with client(settings) as api:
        assert api.get(f"/v1/checkpoints/{info['id']}/download").status_code == 200
        store.local_path(info["key"])  # a cached copy, as loading the model leaves
        assert (store.cache / info["key"]).exists()
        assert api.delete(f"/v1/checkpoints/{info['id']}").status_code == 200
    listed = bucket.list_objects_v2(Bucket="artifacts", Prefix=f"checkpoints/{info['id']}/")
    assert listed["KeyCount"] == 0
    assert not (store.cache / info["key"]).exists()


def test_a_dataset_deleted_while_a_submit_is_checked_answers_404_and_leaves_no_job(service, world, monkeypatch):
    """The submit's slow checks run before it takes the project's lock; a deletion that commits in
    between is seen once the lock is taken, so no job is inserted on a deleted dataset."""
    from jobs import deletion, submit

    a, dataset = world["a"], world["dataset"]
    real_admit = submit.admit_job

    def deleted_meanwhile(session, quotas, project_id, kind):
        with session_scope(service.database_url) as other:
            deletion.delete_dataset(other, project_id, dataset)
        return real_admit(session, quotas, project_id, kind)

    monkeypatch.setattr(submit, "admit_job", deleted_meanwhile)
    with client(service, auth=True) as api:
        evaluate = {"kind": "evaluate", "dataset": dataset, "checkpoint": "raw-pixels"}
        refused = api.post("/v1/jobs", json=evaluate, headers=a)
        assert refused.status_code == 404 and "not found (deleted)" in refused.json()["detail"]
    assert rows(service, Job, Job.kind == "evaluate") == 0
