"""Every registered method runs as a pretrain job over HTTP on a real worker (embedded default),
and its downloadable parts rebuild with core alone."""
from __future__ import annotations

import json
from dataclasses import asdict

import pytest
import torch
from safetensors.torch import load as st_load

from core.checkpoint import load_backbone, load_tree
from core.methods import method_info
from tests.conftest import WorkerProcess, wait_for
from tests.core.test_all_methods import IMAGE_METHODS
from tests.core.tiny import IMAGE_SIZE, tiny_backbone, tiny_options


def spec_for(name: str) -> dict:
    """Silent on every training setting: only tiny networks, a batch and a budget for the CPU."""
    backbone, options = tiny_backbone(name)
    return {"method": name, "backbone": backbone, "backbone_options": options, "method_options": tiny_options(name),
            "dataset": "digits", "image_size": IMAGE_SIZE, "steps": 3, "batch_size": 32, "log_every": 1,
            "evaluations": []}


def assert_trained_with_its_recipe(name: str, state: dict) -> None:
    """The config the loop received, the method's hyper-parameters and its views (read back from
    the full training state of the final checkpoint) are the method's small recipe."""
    recipe = method_info(name).recipes["small"]
    config, spec = state["config"], spec_for(name)
    lr = recipe.base_lr * spec["batch_size"] / 256 if recipe.lr_scaling == "linear" else recipe.base_lr
    assert config["lr"] == pytest.approx(lr), name
    own_lr = recipe.base_lr * recipe.batch_size / 256 if recipe.lr_scaling == "linear" else recipe.base_lr
    expected = {"optimizer": recipe.optimizer, "final_lr": pytest.approx(recipe.final_lr * lr / own_lr),
                "weight_decay": recipe.weight_decay, "final_weight_decay": recipe.final_weight_decay,
                "momentum": recipe.momentum, "betas": list(recipe.betas), "eta": recipe.eta,
                "clip_lr": recipe.clip_lr, "exclude_bias_n_norm": recipe.exclude_bias_n_norm,
                "grad_clip": recipe.grad_clip, "grad_clip_mode": recipe.grad_clip_mode, "steps": 3, "batch_size": 32}
    assert {k: config[k] for k in expected} == expected, name
    # absolute epochs of 44 steps, capped at the 3-step run
    assert config["warmup_steps"] == (3 if recipe.warmup_epochs else 0), name
    assert config["freeze_last_layer_steps"] == (3 if recipe.freeze_last_layer_epochs else 0), name
    tiny = tiny_options(name)
    for key, value in recipe.method_options.items():
        if key not in tiny:
            assert state["hparams"][key] == (list(value) if isinstance(value, tuple) else value), (name, key)
    assert state["views"] == json.loads(json.dumps(asdict(recipe.views))), name


def test_every_method_trains_through_the_service(sqlite_service, tmp_path):
    from fastapi.testclient import TestClient

    from api.app import create_app

    with TestClient(create_app(sqlite_service)) as api:
        methods = {m["name"] for m in api.get("/v1/methods").json()["data"]}
        assert set(IMAGE_METHODS) <= methods
        proc = WorkerProcess(sqlite_service).start()
        try:
            jobs = {}
            for name in IMAGE_METHODS:
                response = api.post("/v1/jobs", json=spec_for(name))
                assert response.status_code == 201, response.text
                jobs[name] = response.json()["id"]
            for name, job_id in jobs.items():
                done = wait_for(api, job_id, timeout=300)
                assert done["state"] == "succeeded", (name, done["error"], proc.output()[-3000:])
                checkpoint = done["result"]["checkpoint"]
                body = api.get(f"/v1/checkpoints/{checkpoint}/download", params={"part": "backbone"}).content
                path = tmp_path / f"{name}.safetensors"
                path.write_bytes(body)
                model, manifest = load_backbone(path)
                features = model(torch.zeros(2, 1, IMAGE_SIZE, IMAGE_SIZE))
                assert features.shape == (2, manifest["feature_dim"]), name
                if name in ("byol", "dino", "data2vec"):  # the EMA teacher is what users take downstream
                    teacher = api.get(f"/v1/checkpoints/{checkpoint}/download", params={"part": "teacher"})
                    assert teacher.content == body, name
                full = api.get(f"/v1/checkpoints/{checkpoint}/download", params={"part": "full"})
                assert full.status_code == 200 and st_load(full.content), name
                (tmp_path / f"{name}-full.safetensors").write_bytes(full.content)
                state, _ = load_tree(tmp_path / f"{name}-full.safetensors")
                assert_trained_with_its_recipe(name, state)
        finally:
            proc.stop()
