"""GET /v1/checkpoints/{id}/download?format=onnx: under onnxruntime the file gives what
POST /v1/embeddings gives, for the small CNN, ResNet and ViT backbones."""
from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch

from core.backbones import build_backbone
from jobs.checkpoints import register
from jobs.db import session_scope
from jobs.storage import store_for
from jobs.tables import DEFAULT_PROJECT, Job

ort = pytest.importorskip("onnxruntime")


@pytest.fixture
def service(sqlite_service):
    """The embedded default only: the export path has nothing that depends on the database. The
    endpoint serves in fp32 here, so that the exported fp32 graph must match it to 1e-4."""
    from jobs.migrate import upgrade

    upgrade(sqlite_service.database_url)
    return sqlite_service.model_copy(update={"embedding_precision": "fp32"})


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models: extra intra-op threads only fight over the shared cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


BACKBONES = {"small_cnn": ({"width": 8}, 1, 8), "resnet18": ({}, 3, 16),
             "vit_tiny": ({"dim": 48, "depth": 2, "heads": 3}, 3, 16)}


def registered_checkpoint(settings, name: str) -> tuple[str, int]:
    """A checkpoint row and file as a finished job leaves them (BatchNorm statistics not the identity)."""
    options, channels, size = BACKBONES[name]
    torch.manual_seed(0)
    model = build_backbone(name, in_channels=channels, image_size=size, **options)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    manifest = {"format": "darkmatter-checkpoint/1", "method": "simclr", "backbone": model.config,
                "feature_dim": model.feature_dim, "normalization": {"mean": [0.4] * channels, "std": [0.3] * channels},
                "input_size": [channels, size, size]}
    with session_scope(settings.database_url) as session:
        job = Job(id=f"job_onnx_{name}", project_id=DEFAULT_PROJECT, kind="pretrain", spec={}, queue="default",
                  method="simclr", state="succeeded")
        session.add(job)
        session.flush()
        row = register(session, store_for(settings), project_id=DEFAULT_PROJECT, job_id=job.id, step=1, final=True,
                       method="simclr", backbone=name, dataset_id=None, trees={"backbone": model.state_dict()},
                       manifest=manifest)
        return row.id, channels


@pytest.mark.parametrize("name", list(BACKBONES))
def test_onnx_download_gives_the_endpoints_embeddings(api, service, name):
    checkpoint_id, channels = registered_checkpoint(service, name)
    size = BACKBONES[name][2]
    response = api.get(f"/v1/checkpoints/{checkpoint_id}/download", params={"format": "onnx"})
    assert response.status_code == 200, response.text
    body = response.content
    assert response.headers["etag"] == f'"{hashlib.sha256(body).hexdigest()}"'
    assert response.headers["content-disposition"].endswith('.onnx"')

    rng = np.random.default_rng(3)
    images = rng.integers(0, 256, (4, size, size, channels))
    served = api.post("/v1/embeddings", json={"model": checkpoint_id, "input": images.tolist()}).json()
    expected = np.array([d["embedding"] for d in served["data"]], dtype=np.float32)
    session = ort.InferenceSession(body, providers=["CPUExecutionProvider"])
    (actual,) = session.run(None, {"pixels": images.transpose(0, 3, 1, 2).astype(np.float32)})
    assert actual.shape == expected.shape
    assert np.abs(actual - expected).max() < 1e-4

    again = api.get(f"/v1/checkpoints/{checkpoint_id}/download", params={"format": "onnx"},
                    headers={"If-None-Match": response.headers["etag"]})
    assert again.status_code == 304  # exported once, kept beside the checkpoint
    half = api.get(f"/v1/checkpoints/{checkpoint_id}/download", params={"format": "onnx"},
                   headers={"Range": f"bytes={len(body) // 2}-"})
    assert half.status_code == 206 and half.content == body[len(body) // 2:]


def test_onnx_of_another_part_or_format_is_a_clear_4xx(api, service):
    checkpoint_id, _ = registered_checkpoint(service, "small_cnn")
    response = api.get(f"/v1/checkpoints/{checkpoint_id}/download", params={"format": "onnx", "part": "full"})
    assert response.status_code == 422 and "backbone only" in response.json()["detail"]
    response = api.get(f"/v1/checkpoints/{checkpoint_id}/download", params={"format": "tflite"})
    assert response.status_code == 422
    response = api.get("/v1/checkpoints/ckpt_nope/download", params={"format": "onnx"})
    assert response.status_code == 404
