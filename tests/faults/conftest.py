"""Fault-injection helpers: faster leases, process lookup, progress since a point, a replayed run."""
from __future__ import annotations

import json
import logging
import os
import signal
import sqlite3
import time
from functools import lru_cache
from pathlib import Path

import pytest
import torch
from sqlalchemy import func, select

from jobs.db import session_scope
from jobs.tables import Checkpoint, Dataset, Job, JobEvent, Metric
from tests.conftest import TINY_PRETRAIN

log = logging.getLogger(__name__)

# Long enough to be killed mid-run several times (~30 ms a step on one CPU thread).
FAULT_SPEC = {**TINY_PRETRAIN, "steps": 120, "batch_size": 32, "log_every": 1, "checkpoint_every": 10,
              "evaluations": [], "max_attempts": 6, "keep_last": 3}


@pytest.fixture
def service(service):
    """The same backends with short leases, so a lost worker is noticed within seconds, and a
    cancel check every step."""
    return service.model_copy(update={"heartbeat_interval": 0.3, "heartbeat_timeout": 8.0, "sweep_interval": 0.5,
                                      "cancel_poll_seconds": 0.0})


def children(pid: int) -> list[int]:
    """Direct child processes of `pid` (from /proc, no psutil needed)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.append(int(entry.name))
    return found


def training_child(worker, timeout: float = 60) -> int:
    """The pid of the worker's `workers.child` process, once it exists."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for pid in children(worker.proc.pid):
            try:
                if b"workers.child" in Path(f"/proc/{pid}/cmdline").read_bytes():
                    return pid
            except OSError:
                pass
        time.sleep(0.05)
    raise AssertionError(f"no training child under worker {worker.proc.pid}:\n{worker.output()[-3000:]}")


def write_locked(path: Path) -> bool:
    """Whether another connection holds the SQLite file's write lock right now."""
    conn = sqlite3.connect(path, timeout=0, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("ROLLBACK")
        return False
    except sqlite3.OperationalError:
        return True
    finally:
        conn.close()


def pause_between_writes(pgid: int, home: Path, tries: int = 200) -> int:
    """SIGSTOP the process group at a moment when none of it is inside a write transaction on the
    service's SQLite files (jobs, broker, results). A writer frozen mid-transaction keeps the
    file's lock until it runs again, and no other process can break a SQLite lock: every writer on
    that file waits for it. (PostgreSQL is the deployment that outlives a frozen writer: it ends
    a session idle in its transaction, tested in test_database_locks.) Returns how many stops
    landed inside a write and were undone."""
    files = [f for f in home.glob("*.db") if f.is_file()]
    for attempt in range(tries):
        os.killpg(pgid, signal.SIGSTOP)
        time.sleep(0.05)  # stopped everywhere: a lock seen now is held by the stopped group or a live writer
        if not any(write_locked(f) for f in files):
            log.info("paused %d after %d stops inside a write transaction", pgid, attempt)
            return attempt
        os.killpg(pgid, signal.SIGCONT)
        time.sleep(0.01 * (1 + attempt % 7))
    raise AssertionError(f"could not pause {pgid} outside a write transaction in {tries} tries")


def job_row(settings, job_id: str) -> Job:
    with session_scope(settings.database_url) as session:
        return session.get(Job, job_id)


def last_metric_id(settings, job_id: str) -> int:
    with session_scope(settings.database_url) as session:
        return session.scalar(select(func.max(Metric.id)).where(Metric.job_id == job_id)) or 0


def loss_steps_since(settings, job_id: str, after_id: int) -> list[int]:
    """Steps of the `loss` rows written after metric row `after_id` (one attempt's progress)."""
    with session_scope(settings.database_url) as session:
        return list(session.scalars(select(Metric.step).where(Metric.job_id == job_id, Metric.name == "loss",
                                                              Metric.id > after_id).order_by(Metric.id)))


def wait_progress(settings, job_id: str, after_id: int, steps: int, timeout: float = 90) -> list[int]:
    """Wait until the job has logged `steps` new steps after metric row `after_id`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        seen = loss_steps_since(settings, job_id, after_id)
        if len(seen) >= steps:
            return seen
        if job_row(settings, job_id).state in ("succeeded", "failed", "cancelled"):
            raise AssertionError(f"job {job_id} ended before it could be interrupted: {job_row(settings, job_id).state}")
        time.sleep(0.02)
    raise AssertionError(f"job {job_id} made no progress after metric {after_id} in {timeout}s")


def events(settings, job_id: str) -> list[JobEvent]:
    with session_scope(settings.database_url) as session:
        return list(session.scalars(select(JobEvent).where(JobEvent.job_id == job_id).order_by(JobEvent.id)))


def checkpoints_of(settings, job_id: str) -> list[Checkpoint]:
    with session_scope(settings.database_url) as session:
        return list(session.scalars(select(Checkpoint).where(Checkpoint.job_id == job_id).order_by(Checkpoint.step)))


def final_state(settings, job_id: str) -> dict:
    """The training state of the job's final checkpoint (verified against its sha256)."""
    from jobs.checkpoints import final_checkpoint, load_part
    from jobs.storage import ArtifactStore

    with session_scope(settings.database_url) as session:
        row = final_checkpoint(session, job_id)
        assert row is not None, f"job {job_id} has no final checkpoint"
    state, _ = load_part(ArtifactStore(settings.storage_url), row, "full")
    return state


@lru_cache(maxsize=4)
def _reference(recipe_json: str, dataset_uri: str, dataset_format: str, stats_json: str, storage_url: str) -> dict:
    from core.data.transforms import resize
    from core.train import train
    from jobs import images
    from jobs.storage import ArtifactStore
    from workers.pretrain_image import build_method
    from workers.training import train_config

    recipe = json.loads(recipe_json)
    row = Dataset(id="ds_ref", uri=dataset_uri, format=dataset_format, stats=json.loads(stats_json))
    threads = torch.get_num_threads()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))  # as in the worker's child
    try:
        train_set, _ = images.load(row, ArtifactStore(storage_url))
        if recipe["image_size"] != train_set.image_size:
            train_set = resize(train_set, recipe["image_size"])
        method = build_method(recipe, train_set.channels, row.stats["mean"], row.stats["std"], recipe["train"]["seed"])
        train(method, train_set.images, train_config(recipe))
    finally:
        torch.set_num_threads(threads)
    return {k: v.clone() for k, v in method.state_dict().items()}


def uninterrupted_weights(settings, job_id: str) -> dict:
    """The method's weights after the job's resolved recipe trained in one go, in this process."""
    with session_scope(settings.database_url) as session:
        job = session.get(Job, job_id)
        dataset = session.get(Dataset, job.spec["dataset"])
        recipe = dict(job.recipe)
    return _reference(json.dumps(recipe, sort_keys=True), dataset.uri, dataset.format, json.dumps(dataset.stats, sort_keys=True),
                      settings.storage_url)


def assert_same_weights(actual: dict, expected: dict, atol: float = 1e-5) -> None:
    assert set(actual) == set(expected)
    for name, tensor in expected.items():
        assert torch.allclose(actual[name].float(), tensor.float(), atol=atol), name
