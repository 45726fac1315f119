"""Real infrastructure outages, with the servers owned by the test: the database stopped for 60 s
under two training jobs (default lease settings), and the S3 store killed while a checkpoint is
committed."""
from __future__ import annotations

import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import select

from jobs.db import get_engine, session_scope
from jobs.settings import Settings
from jobs.tables import JobEvent, Metric
from tests.conftest import REDIS, TINY_PRETRAIN, WorkerProcess, reachable, wait_for
from tests.faults import own_postgres

LONG = {**TINY_PRETRAIN, "steps": 400, "batch_size": 32, "log_every": 5, "checkpoint_every": 50, "evaluations": [],
        "max_attempts": 4}

SQLITE_ONLY = pytest.mark.parametrize("service", ["sqlite"], indirect=True)  # Postgres: test_fencing, test_outages


def logged_steps(settings, job_id: str) -> list[int]:
    with session_scope(settings.database_url) as session:
        return list(session.scalars(select(Metric.step).where(Metric.job_id == job_id, Metric.name == "loss")
                                    .order_by(Metric.id)))


def messages(settings, job_id: str) -> list[str]:
    with session_scope(settings.database_url) as session:
        return list(session.scalars(select(JobEvent.message).where(JobEvent.job_id == job_id).order_by(JobEvent.id)))


def wait_until(check, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.skipif(not own_postgres.available(), reason="needs the installed PostgreSQL server, runuser and root")
def test_a_60_second_database_outage_costs_no_attempt(tmp_path):
    if not reachable("127.0.0.1", 6379):
        pytest.skip("Redis (the broker, which stays up) is not reachable")
    from fastapi.testclient import TestClient

    from api.app import create_app
    from jobs.migrate import upgrade

    pg = own_postgres.OwnPostgres().init()
    workers: list[WorkerProcess] = []
    try:
        settings = Settings(home=tmp_path / "home", database_url=pg.url, broker_url=REDIS,  # default lease settings
                            broker_key_prefix=f"dmtest-{secrets.token_hex(4)}:",
                            result_backend=f"db+sqlite:///{tmp_path / 'results.db'}").resolved()
        upgrade(settings.database_url)
        workers = [WorkerProcess(settings, None, f"w{i}").start() for i in range(2)]
        with TestClient(create_app(settings)) as api:
            ids = [api.post("/v1/jobs", json=LONG).json()["id"] for _ in range(2)]
            wait_until(lambda: all(len(logged_steps(settings, j)) >= 12 for j in ids), 300, "both jobs to train")
            pg.stop()
            get_engine(settings.database_url).dispose()
            time.sleep(60)
            pg.start()
            for job_id in ids:
                done = wait_for(api, job_id, timeout=600)
                assert done["state"] == "succeeded" and done["attempt"] == 1, (done, workers[0].output()[-3000:])
                steps = logged_steps(settings, job_id)
                assert len(steps) == len(set(steps)) == LONG["steps"] // LONG["log_every"]  # no step repeated
                assert not [m for m in messages(settings, job_id) if m.startswith("retrying")]
    finally:
        for w in workers:
            w.stop()
        get_engine(pg.url).dispose()
        pg.destroy()


def start_moto(port: int) -> subprocess.Popen:
    server = Path(sys.executable).with_name("moto_server")
    proc = subprocess.Popen([str(server), "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    wait_until(lambda: reachable("127.0.0.1", port), 30, "moto to listen")
    return proc


@SQLITE_ONLY
def test_storage_killed_while_committing_a_checkpoint_is_retried(service, api, worker, monkeypatch):
    boto3 = pytest.importorskip("boto3")
    port = own_postgres.free_port()
    endpoint = f"http://127.0.0.1:{port}"
    for key, value in {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1",
                       "DARKMATTER_S3_ENDPOINT_URL": endpoint}.items():
        monkeypatch.setenv(key, value)
    moto = start_moto(port)
    bucket = lambda: boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket="art")
    bucket()
    try:
        settings = service.model_copy(update={"storage_url": "s3://art", "s3_endpoint_url": endpoint})
        from fastapi.testclient import TestClient

        from api.app import create_app

        with TestClient(create_app(settings)) as client:
            w = WorkerProcess(settings, None, "s3").start()
            try:
                job_id = client.post("/v1/jobs", json={**LONG, "checkpoint_every": 20, "log_every": 1}).json()["id"]
                wait_until(lambda: any("checkpoint" in m and "at step" in m for m in messages(settings, job_id)),
                           300, "the first checkpoint")
                moto.send_signal(signal.SIGKILL)  # the next commit meets a dead store
                moto.wait()
                wait_until(lambda: client.get(f"/v1/jobs/{job_id}").json()["attempt"] >= 2
                           or client.get(f"/v1/jobs/{job_id}").json()["state"] == "retrying", 120, "the retry")
                moto = start_moto(port)  # back, empty, as a replaced MinIO volume would be
                bucket()
                done = wait_for(client, job_id, timeout=300)
                assert done["state"] == "succeeded" and done["error"] is None, (done, w.output()[-3000:])
                assert done["attempt"] >= 2
                assert any(m.startswith("transient error") for m in messages(settings, job_id))
            finally:
                w.stop()
    finally:
        moto.kill()
