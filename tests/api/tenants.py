"""Helpers for tests of several projects on one service: keys, an auth-on client, uploads."""
from __future__ import annotations

from pathlib import Path

import torch
from fastapi.testclient import TestClient

from api.app import create_app
from core.backbones import build_backbone
from jobs import checkpoints
from jobs.db import session_scope
from jobs.keys import create_key
from jobs.storage import store_for
from tests.datasets.make import digits_zip


def client(settings, **changes) -> TestClient:
    return TestClient(create_app(settings.model_copy(update=changes)))


def bearer(key: str) -> dict:
    return {"Authorization": f"Bearer {key}"}


def project_keys(settings, *names: str) -> list[tuple[str, dict]]:
    """(project id, auth headers) of a new key in each named project."""
    out = []
    with session_scope(settings.database_url) as session:
        for name in names:
            project_id, key = create_key(session, name)
            out.append((project_id, bearer(key)))
    return out


def small_zip(folder: Path, n: int = 20) -> bytes:
    return digits_zip(folder / f"digits-{n}.zip", n=n).read_bytes()


def upload(api: TestClient, data: bytes, headers: dict | None = None, name: str = "d.zip"):
    return api.post("/v1/datasets", files={"file": (name, data, "application/zip")}, headers=headers or {})


def real_checkpoint(settings, project_id: str, job_id: str) -> str:
    """A loadable small-CNN backbone checkpoint of the job (1-channel 8-px images, as digits)."""
    torch.manual_seed(0)
    model = build_backbone("small_cnn", in_channels=1, image_size=8, width=8)
    manifest = {"format": "darkmatter-checkpoint/1", "method": "simclr", "backbone": model.config,
                "feature_dim": model.feature_dim, "normalization": {"mean": [0.4], "std": [0.3]},
                "input_size": [1, 8, 8]}
    with session_scope(settings.database_url) as session:
        row = checkpoints.register(session, store_for(settings), project_id=project_id, job_id=job_id, step=1,
                                   final=True, method="simclr", backbone="small_cnn", dataset_id=None,
                                   trees={"backbone": model.state_dict()}, manifest=manifest)
        return row.id
