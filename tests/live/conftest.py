"""One live service for the tests of what people use day to day (CLI, client, SSE, dashboard):
a real `python -m api serve` process on a free port and a real worker, on the embedded default,
holding a finished tiny pretrain job (with its kNN/linear scores) and an embed-index job."""
from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.conftest import ROOT, TINY_PRETRAIN, WorkerProcess, make_settings, settings_env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(url: str, process: subprocess.Popen, log: Path | None = None, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline or process.poll() is not None:
            raise AssertionError(f"API did not start:\n{log.read_text()[-3000:] if log else ''}")
        time.sleep(0.3)


@dataclass
class Live:
    url: str
    settings: object
    api_log: Path
    worker: WorkerProcess
    dataset: dict
    job: dict
    checkpoint: str
    index: dict
    token: str = ""  # the API runs without --auth: /v1 needs its launch token

    def http(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30, headers={"Authorization": f"Bearer {self.token}"})

    def wait(self, job_id: str, states=("succeeded", "failed", "cancelled"), timeout: float = 240) -> dict:
        deadline = time.monotonic() + timeout
        with self.http() as http:
            while time.monotonic() < deadline:
                job = http.get(f"/v1/jobs/{job_id}").json()
                if job["state"] in states:
                    return job
                time.sleep(0.3)
        raise AssertionError(f"job {job_id} did not reach {states} in {timeout}s: {job}\n{self.worker.output()[-3000:]}")


@pytest.fixture(scope="package")
def live(tmp_path_factory):
    settings, _ = make_settings("sqlite", tmp_path_factory.mktemp("live") / "home")
    from jobs.migrate import upgrade

    upgrade(settings.database_url)  # before the processes start: they would race to create the tables
    port = free_port()
    api_log = settings.home / "api.log"
    # Without --auth the API asks for a launch token: a known one, which the client and CLI run by the
    # tests (in this process) read from DARKMATTER_TOKEN, as they would from the launch-token file.
    token = secrets.token_urlsafe(16)
    saved_token = os.environ.get("DARKMATTER_TOKEN")
    os.environ["DARKMATTER_TOKEN"] = token
    # the API also accepts queue "idle", which the worker does not consume: jobs there wait
    api = subprocess.Popen([sys.executable, "-m", "api", "serve", "--host", "127.0.0.1", "--port", str(port)],
                           env={**settings_env(settings), "DARKMATTER_QUEUES": "default,gpu,cpu,idle",
                                "DARKMATTER_LAUNCH_TOKEN": token}, cwd=ROOT,
                           stdout=open(api_log, "wb"), stderr=subprocess.STDOUT,
                           start_new_session=True)
    worker = WorkerProcess(settings, queues=["default", "gpu", "cpu"], name="live").start()
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, api, api_log)
        with httpx.Client(base_url=url, timeout=60, headers={"Authorization": f"Bearer {token}"}) as http:
            dataset = http.post("/v1/datasets", json={"builtin": "digits"}).json()
            job = http.post("/v1/jobs", json={**TINY_PRETRAIN, "dataset": dataset["id"]}).json()
            state = Live(url, settings, api_log, worker, dataset, job, "", {}, token)
            job = state.wait(job["id"])
            assert job["state"] == "succeeded", job
            state.job, state.checkpoint = job, job["result"]["checkpoint"]
            index = http.post("/v1/jobs", json={"kind": "embed-index", "checkpoint": state.checkpoint,
                                                "dataset": dataset["id"], "split": "test"}).json()
            state.index = state.wait(index["id"])
            assert state.index["state"] == "succeeded", state.index
        yield state
    finally:
        if saved_token is None:
            os.environ.pop("DARKMATTER_TOKEN", None)
        else:
            os.environ["DARKMATTER_TOKEN"] = saved_token
        worker.stop()
        api.terminate()
        try:
            api.wait(30)
        except subprocess.TimeoutExpired:
            api.kill()
