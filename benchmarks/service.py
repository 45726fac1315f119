"""Helpers for the serving and API benchmarks: an embedded service in a temporary home, started
as a real API process, with checkpoints registered from random-init backbones."""
from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from jobs.settings import Settings


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def embedded_settings(**overrides) -> Settings:
    home = Path(tempfile.mkdtemp(prefix="dm-bench-"))
    settings = Settings(home=home, rate_limit_per_second=0, **overrides).resolved()
    from jobs.migrate import upgrade

    upgrade(settings.database_url)
    return settings


def start_api(settings: Settings, extra_env: dict | None = None) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = dict(os.environ, **{f"DARKMATTER_{k.upper()}": str(v) for k, v in {
        "home": settings.home, "database_url": settings.database_url, "broker_url": settings.broker_url,
        "result_backend": settings.result_backend, "storage_url": settings.storage_url,
        "rate_limit_per_second": 0}.items()}, **(extra_env or {}))
    # without --auth the API asks for a launch token: the load generator and the client send DARKMATTER_TOKEN
    env["DARKMATTER_LAUNCH_TOKEN"] = os.environ.setdefault("DARKMATTER_TOKEN", secrets.token_urlsafe(16))
    proc = subprocess.Popen([sys.executable, "-m", "api", "serve", "--host", "127.0.0.1", "--port", str(port)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.3)
    proc.kill()
    raise RuntimeError("the API did not start")


def register_checkpoint(settings: Settings, backbone: str, options: dict, channels: int = 3, size: int = 32) -> str:
    """A checkpoint of a random-init backbone (serving cost does not depend on the weights)."""
    import torch

    from core.backbones import build_backbone
    from jobs import checkpoints
    from jobs.db import session_scope
    from jobs.ids import new_id
    from jobs.storage import store_for
    from jobs.tables import DEFAULT_PROJECT, Job

    torch.manual_seed(0)
    model = build_backbone(backbone, in_channels=channels, image_size=size, **options)
    manifest = {"format": "darkmatter-checkpoint/1", "method": "simclr", "backbone": model.config,
                "feature_dim": model.feature_dim, "normalization": {"mean": [0.5] * channels, "std": [0.25] * channels},
                "input_size": [channels, size, size]}
    with session_scope(settings.database_url) as session:
        job = Job(id=new_id("job"), project_id=DEFAULT_PROJECT, kind="pretrain", spec={}, queue="default",
                  method="simclr", state="succeeded", result={})
        session.add(job)
        session.flush()
        row = checkpoints.register(session, store_for(settings), project_id=DEFAULT_PROJECT, job_id=job.id, step=0,
                                   final=True, method="simclr", backbone=backbone, dataset_id=None,
                                   trees={"backbone": model.state_dict()}, manifest=manifest)
        return row.id
