"""A submit does not redo per-process work: a built-in dataset is loaded once however many first
submits arrive together, and a model is built once for specs that build the same model."""
from __future__ import annotations

import threading

from jobs import checks, images
from tests.conftest import TINY_PRETRAIN


def test_first_submits_arriving_together_load_a_builtin_dataset_once(monkeypatch):
    loads = []
    real = images.load_source

    def counted(uri):
        loads.append(uri)
        return real(uri)

    monkeypatch.setattr(images, "load_source", counted)
    images._described_builtin.cache_clear()
    described = []
    threads = [threading.Thread(target=lambda: described.append(images.builtin_description("digits")))
               for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert loads == ["builtin://digits"] and len(described) == 4
    assert all(d == described[0] for d in described) and described[0]["n_items"] > 0
    described[0]["stats"]["channels"] = 99  # each caller gets its own copy to keep in its row
    assert images.builtin_description("digits")["stats"]["channels"] == 1


def test_specs_that_build_the_same_model_are_built_once(api):
    checks._built_size.cache_clear()
    for seed in (1, 2):  # the seed (like steps or the learning rate) is not read by the build
        assert api.post("/v1/jobs", json={**TINY_PRETRAIN, "seed": seed}).status_code == 201
    assert checks._built_size.cache_info().misses == 1
    wider = {**TINY_PRETRAIN, "method_options": {"proj_hidden_dim": 64, "proj_dim": 16}}
    assert api.post("/v1/jobs", json=wider).status_code == 201
    assert checks._built_size.cache_info().misses == 2


def test_a_model_over_the_size_limit_is_refused_every_time(service):
    from fastapi.testclient import TestClient

    from api.app import create_app

    # over the limit with its heads (27,453), not by the backbone's estimate (24,744) alone
    settings = service.model_copy(update={"max_model_parameters": 26_000})
    with TestClient(create_app(settings)) as api:
        for seed in (1, 2):  # the size is remembered, the limit is checked on every submit
            response = api.post("/v1/jobs", json={**TINY_PRETRAIN, "seed": seed})
            assert response.status_code == 422, response.text
            assert "would have 27,453 parameters and buffers; at most 26,000" in response.json()["detail"]
