"""The broker is a doorbell and the database the truth: duplicate messages run a job once, a
Redis restart and a database outage of a few seconds do not lose the job."""
from __future__ import annotations

import shutil
import socket
import subprocess
import threading
import time

import pytest

from jobs.queue import enqueue
from tests.conftest import PG_ADMIN, TINY_PRETRAIN, wait_for
from tests.faults.conftest import FAULT_SPEC, events, job_row, wait_progress


def test_same_message_delivered_twice_runs_the_job_once(service, api, worker):
    job_id = api.post("/v1/jobs", json={**FAULT_SPEC, "steps": 30}).json()["id"]
    enqueue(service, job_id, "default")  # two more copies of the doorbell, before any worker exists
    enqueue(service, job_id, "default")
    worker()
    done = wait_for(api, job_id, timeout=120)
    assert done["state"] == "succeeded" and done["attempt"] == 1, done
    assert sum("claimed by" in e.message for e in events(service, job_id)) == 1


def _hold_sqlite_lock(path: str, seconds: float, held: threading.Event) -> None:
    import sqlite3

    conn = sqlite3.connect(path, timeout=30)
    conn.execute("BEGIN EXCLUSIVE")  # every other writer waits (busy timeout) until we let go
    held.set()
    time.sleep(seconds)
    conn.rollback()
    conn.close()


def _postgres_outage(url: str, seconds: float, held: threading.Event) -> None:
    """Refuse new connections to the job database and drop the open ones, for `seconds`."""
    import psycopg

    name = url.rsplit("/", 1)[1]
    admin = PG_ADMIN.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        try:
            conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))
            held.set()
            time.sleep(seconds)
        finally:
            conn.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')


def test_database_outage_of_a_few_seconds_is_survived(service, api, worker):
    settings = service.model_copy(update={"heartbeat_timeout": 10.0})  # the outage must not look like a lost worker
    from tests.conftest import WorkerProcess

    proc = WorkerProcess(settings, name="db").start()
    try:
        job_id = api.post("/v1/jobs", json=FAULT_SPEC).json()["id"]
        wait_progress(service, job_id, 0, 5)
        held = threading.Event()
        if service.database_url.startswith("sqlite"):
            target, args = _hold_sqlite_lock, (service.database_url.removeprefix("sqlite:///"), 3.0, held)
        else:
            from jobs.db import get_engine

            get_engine(service.database_url).dispose()  # the test's own pooled connections would be dropped too
            target, args = _postgres_outage, (service.database_url, 3.0, held)
        outage = threading.Thread(target=target, args=args)
        outage.start()
        assert held.wait(30)
        outage.join()
        done = wait_for(api, job_id, timeout=120)
        assert done["state"] == "succeeded" and done["attempt"] == 1, (done, proc.output()[-3000:])
        assert done["step"] == FAULT_SPEC["steps"]
    finally:
        proc.stop()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def own_redis():
    """A private redis-server for this test (the machine's Redis is shared, so it is never restarted)."""
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    port = _free_port()

    def start():
        proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                 "--appendonly", "no"], stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                return proc
            except OSError:
                time.sleep(0.05)
        raise AssertionError("redis-server did not start")

    procs = [start()]

    def restart(down_seconds: float) -> None:
        subprocess.run(["redis-cli", "-p", str(port), "shutdown", "nosave"], check=False, capture_output=True)
        procs[-1].wait(10)
        time.sleep(down_seconds)
        procs.append(start())

    yield f"redis://127.0.0.1:{port}/0", restart
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(10)


@pytest.mark.postgres
def test_redis_restart_during_a_job_loses_nothing(service, own_redis):
    if not service.database_url.startswith("postgresql"):
        pytest.skip("the Redis broker is the postgres backend's")
    from fastapi.testclient import TestClient

    from api.app import create_app
    from tests.conftest import WorkerProcess

    url, restart = own_redis
    settings = service.model_copy(update={"broker_url": url})
    proc = WorkerProcess(settings, name="r").start()
    try:
        with TestClient(create_app(settings)) as api:
            job_id = api.post("/v1/jobs", json=FAULT_SPEC).json()["id"]
            wait_progress(settings, job_id, 0, 5)
            restart(2.0)
            done = wait_for(api, job_id, timeout=120)
            assert done["state"] == "succeeded" and done["attempt"] == 1, (done, proc.output()[-3000:])
            later = api.post("/v1/jobs", json=TINY_PRETRAIN).json()["id"]  # the worker reconnected
            assert wait_for(api, later, timeout=120)["state"] == "succeeded", proc.output()[-3000:]
        assert job_row(settings, job_id).state == "succeeded"
    finally:
        proc.stop()
