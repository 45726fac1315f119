"""Every registered method runs as a pretrain job over HTTP on a real worker (embedded default),
and its downloadable parts rebuild with core alone."""
from __future__ import annotations

import io

import torch
from safetensors.torch import load as st_load

from core.checkpoint import load_backbone
from tests.conftest import WorkerProcess, wait_for
from tests.core.test_all_methods import IMAGE_METHODS
from tests.core.tiny import IMAGE_SIZE, tiny_backbone, tiny_options


def spec_for(name: str) -> dict:
    backbone, options = tiny_backbone(name)
    return {"method": name, "backbone": backbone, "backbone_options": options, "method_options": tiny_options(name),
            "dataset": "digits", "image_size": IMAGE_SIZE, "steps": 3, "batch_size": 32, "log_every": 1}


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
                full = api.get(f"/v1/checkpoints/{checkpoint}/download", params={"part": "full"})
                assert full.status_code == 200 and st_load(full.content), name
        finally:
            proc.stop()
