"""The t-SNE map and ONNX export: computed once (failures too), bounded, and limited per project
with a 429 and Retry-After, so one tenant's requests cannot hold every API thread."""
from __future__ import annotations

import time

import pytest
import torch

from api.concurrency import Slots
from core.backbones import build_backbone
from core.checkpoint import save_tree
from jobs.checkpoints import register
from jobs.db import session_scope
from jobs.storage import store_for
from jobs.tables import DEFAULT_PROJECT, Job
from tests.conftest import make_settings


@pytest.fixture
def service(tmp_path):
    settings, _ = make_settings("sqlite", tmp_path / "home")
    from jobs.migrate import upgrade

    upgrade(settings.database_url)
    yield settings
    from jobs.db import get_engine

    get_engine(settings.database_url).dispose()


def client_for(settings):
    from fastapi.testclient import TestClient

    from api.app import create_app

    return TestClient(create_app(settings))


def index_job(settings, n: int = 80) -> str:
    """A succeeded embed-index job with its stored vectors, as the worker leaves it."""
    generator = torch.Generator().manual_seed(0)
    vectors = torch.nn.functional.normalize(torch.randn(n, 8, generator=generator), dim=1)
    tree = {"vectors": vectors, "items": torch.arange(n), "labels": torch.arange(n) % 3}
    store = store_for(settings)
    key = "indexes/job_map/index.safetensors"
    sha, size = save_tree(store.staging_path(key), tree, {})
    store.commit(key)
    with session_scope(settings.database_url) as session:
        session.add(Job(id="job_map", project_id=DEFAULT_PROJECT, kind="embed-index", spec={}, queue="default",
                        state="succeeded", result={"key": key, "sha256": sha, "bytes": size, "n_items": n,
                                                   "checkpoint": "ckpt_x", "dataset": "ds_x", "split": "train"}))
    return "job_map"


def test_the_map_is_computed_once_per_job_and_sampled_per_limit(service, monkeypatch):
    from api.routers import explore

    calls = []
    real = explore.project_2d
    monkeypatch.setattr(explore, "project_2d", lambda vectors: calls.append(len(vectors)) or real(vectors))
    job_id = index_job(service)
    with client_for(service) as client:
        full = client.get(f"/v1/indexes/{job_id}/map?limit=80").json()["points"]
        started = time.perf_counter()
        some = [client.get(f"/v1/indexes/{job_id}/map?limit={limit}").json()["points"] for limit in (10, 33, 57)]
        elapsed = time.perf_counter() - started
    assert calls == [80]  # one t-SNE for every limit
    assert [len(points) for points in some] == [10, 33, 57]
    for points in some:
        assert all(point in full for point in points)
    assert elapsed < 1.0


def test_expensive_routes_past_the_projects_limit_get_429(service):
    job_id = index_job(service)
    with client_for(service.model_copy(update={"expensive_per_project": 1})) as client:
        client.app.state.slots = {"expensive": Slots("maps or ONNX exports", 4, 1)}
        with client.app.state.slots["expensive"].hold(DEFAULT_PROJECT):
            started = time.perf_counter()
            response = client.get(f"/v1/indexes/{job_id}/map")
            assert time.perf_counter() - started < 1.0
        assert response.status_code == 429 and int(response.headers["retry-after"]) > 0
        assert "maps or ONNX exports" in response.json()["detail"]
        assert client.get(f"/v1/indexes/{job_id}/map").status_code == 200  # the slot was given back


def checkpoint(settings, width: int = 8) -> str:
    model = build_backbone("small_cnn", in_channels=1, image_size=8, width=width)
    manifest = {"format": "darkmatter-checkpoint/1", "method": "simclr", "backbone": model.config,
                "feature_dim": model.feature_dim, "normalization": {"mean": [0.4], "std": [0.3]},
                "input_size": [1, 8, 8]}
    with session_scope(settings.database_url) as session:
        session.add(Job(id="job_ckpt", project_id=DEFAULT_PROJECT, kind="pretrain", spec={}, queue="default",
                        method="simclr", state="succeeded"))
        session.flush()
        return register(session, store_for(settings), project_id=DEFAULT_PROJECT, job_id="job_ckpt", step=1,
                        final=True, method="simclr", backbone="small_cnn", dataset_id=None,
                        trees={"backbone": model.state_dict()}, manifest=manifest).id


def test_onnx_export_over_the_parameter_cap_is_422_before_loading(service, monkeypatch):
    import core.export

    monkeypatch.setattr(core.export, "export_onnx", lambda *a: pytest.fail("exported past the cap"))
    checkpoint_id = checkpoint(service)
    with client_for(service.model_copy(update={"max_onnx_parameters": 1000})) as client:
        started = time.perf_counter()
        response = client.get(f"/v1/checkpoints/{checkpoint_id}/download?format=onnx")
    assert response.status_code == 422 and "DARKMATTER_MAX_ONNX_PARAMETERS" in response.text, response.text
    assert time.perf_counter() - started < 1.0


def test_a_failed_onnx_export_is_remembered(service, monkeypatch):
    import core.export

    calls = []

    def broken(*args):
        calls.append(1)
        raise RuntimeError("an operator the exporter does not know")

    monkeypatch.setattr(core.export, "export_onnx", broken)
    checkpoint_id = checkpoint(service)
    with client_for(service) as client:
        answers = [client.get(f"/v1/checkpoints/{checkpoint_id}/download?format=onnx") for _ in range(3)]
    assert [a.status_code for a in answers] == [422, 422, 422]
    assert all("an operator the exporter does not know" in a.text for a in answers)
    assert calls == [1]  # tried once
