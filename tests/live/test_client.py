"""The Python client against the live service: pages, wait() with a callback, typed errors,
embeddings as numpy arrays, the async client, and an install without torch or the server."""
from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from client import AsyncClient, Client, ConnectionFailed, InvalidRequest, JobFailed, NotFound
from tests.conftest import ROOT, TINY_PRETRAIN


def test_pages_wait_errors_and_numpy_embeddings(live):
    with Client(live.url) as client:
        spec = {**TINY_PRETRAIN, "dataset": live.dataset["id"], "steps": 2, "evaluations": []}
        submitted = client.submit(spec)["id"]
        seen = []
        assert client.wait(submitted, poll=0.2, on_update=seen.append)["state"] == "succeeded"
        assert seen[-1]["state"] == "succeeded" and len({j["state"] for j in seen}) >= 2  # it saw the job change

        one_by_one = [j["id"] for j in client.iter_jobs(page_size=1)]  # a page of one job at a time
        assert one_by_one == [j["id"] for j in client.jobs(limit=100)["data"]]
        assert {submitted, live.job["id"], live.index["id"]} <= set(one_by_one)
        assert [c["id"] for c in client.iter_checkpoints(job=live.job["id"], page_size=1)] == \
            [c["id"] for c in client.checkpoints(job=live.job["id"])["data"]]
        assert any(s["checkpoint_id"] == live.checkpoint for s in client.iter_scores(page_size=2, protocol="knn"))

        pixels = np.random.default_rng(0).integers(0, 256, (3, 8, 8)).tolist()
        vectors = client.embeddings(live.checkpoint, pixels)
        floats = client.embed(live.checkpoint, pixels)["data"]
        assert vectors.dtype == np.float32 and vectors.shape == (3, len(floats[0]["embedding"]))
        assert np.allclose(vectors, np.array([d["embedding"] for d in floats]), atol=1e-6)

        with pytest.raises(NotFound) as missing:
            client.job("job_nope")
        assert missing.value.status == 404 and "not found" in str(missing.value)
        with pytest.raises(InvalidRequest):
            client.submit({"method": "nope", "dataset": live.dataset["id"]})
        cancelled = client.submit({**spec, "steps": 100000})
        client.cancel(cancelled["id"])
        with pytest.raises(JobFailed) as failed:
            client.wait(cancelled["id"], poll=0.2, raise_on_failure=True)
        assert failed.value.job["state"] == "cancelled"
    with pytest.raises(ConnectionFailed) as unreachable:
        Client("http://127.0.0.1:9").jobs()
    assert "darkmatter up" in unreachable.value.hint


def test_the_async_client(live, tmp_path):
    async def main():
        async with AsyncClient(live.url) as client:
            jobs = [j async for j in client.iter_jobs(page_size=1)]
            states = []
            job = await client.wait(live.job["id"], on_update=lambda j: states.append(j["state"]))
            events = [e async for e in client.events(live.job["id"])]
            vectors = await client.embeddings(live.checkpoint, [[[0] * 8] * 8])
            path, sha = await client.download(live.checkpoint, tmp_path / "b.safetensors")
            with pytest.raises(NotFound):
                await client.checkpoint("ckpt_nope")
            return jobs, states, job, events, vectors, path, sha

    jobs, states, job, events, vectors, path, sha = asyncio.run(main())
    assert live.job["id"] in [j["id"] for j in jobs] and states == ["succeeded"] and job["state"] == "succeeded"
    assert [e.data["data"]["state"] for e in events if e.event == "state"] == ["queued", "running", "succeeded"]
    assert vectors.shape[0] == 1 and path.stat().st_size > 0
    with Client(live.url) as client:
        assert sha == client.checkpoint(live.checkpoint)["sha256"]


def test_the_client_needs_neither_torch_nor_the_server():
    """`pip install darkmatter[client]` brings httpx, numpy, typer, rich and pyyaml only."""
    script = textwrap.dedent("""
        import importlib.abc, sys
        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path, target=None):
                if name.split(".")[0] in {"torch", "fastapi", "sqlalchemy", "celery", "core", "api", "jobs", "workers"}:
                    raise ImportError(f"{name} is not installed")
        sys.meta_path.insert(0, Block())
        import client, client.cli
        from typer.testing import CliRunner
        result = CliRunner().invoke(client.cli.app, ["jobs", "ls", "--url", "http://127.0.0.1:9"])
        assert result.exit_code == 3, result.output
        print("ok", result.output.strip())
    """)
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("ok error: cannot reach the darkmatter API")
