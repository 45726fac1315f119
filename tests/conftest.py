"""Shared fixtures: a service per backend (embedded SQLite, or the machine's PostgreSQL + Redis),
an in-process HTTP client, and real worker processes."""
from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from jobs.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
PG_ADMIN = os.environ.get("DARKMATTER_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
REDIS = os.environ.get("DARKMATTER_TEST_REDIS", "redis://127.0.0.1:6379/0")


def reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def postgres_database() -> tuple[str, callable]:
    """A fresh database on the machine's PostgreSQL; returns (url, drop)."""
    import psycopg

    name = f"dm_{secrets.token_hex(4)}"
    admin = PG_ADMIN.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')

    def drop():
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    return PG_ADMIN.rsplit("/", 1)[0] + f"/{name}", drop


def make_settings(backend: str, home: Path) -> tuple[Settings, callable]:
    """Settings for one isolated service; the callable cleans up server-side state."""
    fast = dict(heartbeat_interval=0.5, heartbeat_timeout=10.0, sweep_interval=1.0, cancel_poll_seconds=0.2)
    if backend == "sqlite":
        return Settings(home=home, **fast).resolved(), lambda: None
    if not (reachable("127.0.0.1", 5432) and reachable("127.0.0.1", 6379)):
        pytest.skip("PostgreSQL (127.0.0.1:5432) or Redis (127.0.0.1:6379) is not reachable")
    url, drop = postgres_database()
    prefix = f"dmtest-{secrets.token_hex(4)}:"  # keys of its own, so no stale message reaches this run
    return Settings(home=home, database_url=url, broker_url=REDIS, broker_key_prefix=prefix,
                    result_backend=f"db+sqlite:///{home / 'results.db'}", **fast).resolved(), drop


def settings_env(settings: Settings) -> dict[str, str]:
    env = dict(os.environ)
    for field in ("home", "database_url", "broker_url", "broker_key_prefix", "result_backend", "storage_url", "heartbeat_interval",
                  "heartbeat_timeout", "sweep_interval", "cancel_poll_seconds", "device", "auth", "requeue_after",
                  "ray_address", "ray_placement_timeout", "watchdog_seconds", "checkpoint_seconds", "max_attempts", "gc_interval",
                  "gc_min_age", "scan_memory_bytes", "data_roots", "child_memory_bytes", "scan_seconds", "max_source_bytes"):
        env[f"DARKMATTER_{field.upper()}"] = str(getattr(settings, field))
    env["PYTHONPATH"] = str(ROOT)
    env["CUDA_VISIBLE_DEVICES"] = ""
    env.setdefault("OMP_NUM_THREADS", "1")  # tiny models: extra threads only fight over the shared cores
    return env


class WorkerProcess:
    """A real `python -m workers` process (Celery, solo pool) for one service."""

    def __init__(self, settings: Settings, queues: list[str] | None = None, name: str = "w"):
        self.settings, self.queues, self.name = settings, queues, name
        self.log = settings.home / f"worker-{name}-{secrets.token_hex(3)}.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> "WorkerProcess":
        args = [sys.executable, "-m", "workers", "--name", f"{self.name}-{secrets.token_hex(3)}@%h"]
        for q in self.queues or []:
            args += ["--queue", q]
        self.proc = subprocess.Popen(args, env=settings_env(self.settings), cwd=ROOT, stdout=open(self.log, "wb"),
                                     stderr=subprocess.STDOUT, start_new_session=True)
        return self

    def stop(self, timeout: float = 30) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        self.kill_children()

    def kill(self) -> None:
        """kill -9 the worker and its training child (the whole process group)."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, 9)
            self.proc.wait()
        self.kill_children()

    def kill_children(self) -> None:
        if self.proc:
            try:
                os.killpg(self.proc.pid, 9)
            except ProcessLookupError:
                pass

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def service(request, tmp_path):
    """Settings for an isolated service on each backend (migrated)."""
    settings, cleanup = make_settings(request.param, tmp_path / "home")
    from jobs.migrate import upgrade

    upgrade(settings.database_url)
    yield settings
    from jobs.db import get_engine

    get_engine(settings.database_url).dispose()
    cleanup()


@pytest.fixture
def sqlite_service(tmp_path):
    settings, _ = make_settings("sqlite", tmp_path / "home")
    yield settings


@pytest.fixture
def api(service):
    """An in-process HTTP client (httpx through Starlette's TestClient) for `service`."""
    from fastapi.testclient import TestClient

    from api.app import create_app

    with TestClient(create_app(service)) as client:
        yield client


@pytest.fixture
def worker(service):
    procs: list[WorkerProcess] = []

    def start(queues: list[str] | None = None, name: str = "w") -> WorkerProcess:
        w = WorkerProcess(service, queues, name).start()
        procs.append(w)
        return w

    yield start
    for w in procs:
        w.stop()


def wait_for(client, job_id: str, states=("succeeded", "failed", "cancelled"), timeout: float = 240) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/v1/jobs/{job_id}").json()
        if job["state"] in states:
            return job
        time.sleep(0.3)
    raise AssertionError(f"job {job_id} did not reach {states} in {timeout}s: {job}")


TINY_PRETRAIN = {"method": "simclr", "backbone": "small_cnn", "backbone_options": {"width": 8}, "dataset": "digits",
                 "steps": 6, "batch_size": 64, "log_every": 2, "method_options": {"proj_hidden_dim": 32, "proj_dim": 16}}
