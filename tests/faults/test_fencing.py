"""Leases are (worker, attempt) on the database's clock: a stale owner's late writes are refused,
its retention never deletes the new owner's files, and two workers racing for one job with
duplicated messages run it once."""
from __future__ import annotations

import time

import pytest
from sqlalchemy import select

from jobs import lifecycle
from jobs.db import session_scope
from jobs.queue import enqueue
from jobs.tables import Checkpoint, Job, JobEvent, Metric
from jobs.specs import PretrainSpec
from tests.conftest import TINY_PRETRAIN, wait_for
from workers.context import JobContext
from workers.training import ServiceCallbacks


def claim(settings, job_id: str, worker_id: str) -> int:
    with session_scope(settings.database_url) as session:
        assert lifecycle.claim(session, job_id, worker_id)
        return session.get(Job, job_id).attempt


def test_stale_owner_writes_nothing_and_prunes_nothing(service, api):
    from core.methods import build

    spec = {**TINY_PRETRAIN, "keep_last": 1}
    job_id = api.post("/v1/jobs", json=spec).json()["id"]
    old = JobContext(service, job_id, "worker-a", attempt=claim(service, job_id, "worker-a"))
    with session_scope(service.database_url) as session:  # the sweeper takes the lease from a stalled owner
        assert lifecycle.release(session, job_id, "worker-a", "worker lease expired (no heartbeat)") == "retrying"
    new = JobContext(service, job_id, "worker-b", attempt=claim(service, job_id, "worker-b"))
    assert new.attempt == old.attempt + 1

    method = build("simclr", backbone="small_cnn", in_channels=1, image_size=8, backbone_options={"width": 4},
                   proj_hidden_dim=8, proj_dim=4)
    manifest = {"backbone": {"name": "small_cnn"}}
    parsed = PretrainSpec.model_validate(spec)
    owner = ServiceCallbacks(new, parsed, manifest, method, "digits", 6)
    owner.on_checkpoint(3, {"step": 3}, final=False)
    owner.flush()  # a periodic checkpoint is written in the background; flush waits for it
    stale = ServiceCallbacks(old, parsed, manifest, method, "digits", 6)
    with pytest.raises(lifecycle.LeaseLost):  # refused in the background, raised where the loop flushes
        stale.on_checkpoint(5, {"step": 5}, final=False)
        stale.flush()
    for late in (lambda: old.log_metrics(5, {"loss": 1.0}, 6), lambda: old.event("log", "late"),
                 lambda: old.add_compute(10.0),
                 lambda: old.write(lambda s: lifecycle.finish(s, job_id, "worker-a", "succeeded"))):
        with pytest.raises(lifecycle.LeaseLost):
            late()
    with session_scope(service.database_url) as session:
        rows = session.scalars(select(Checkpoint).where(Checkpoint.job_id == job_id)).all()
        job = session.get(Job, job_id)
        assert [r.step for r in rows] == [3]  # the new owner's checkpoint survived the old owner's prune
        assert job.state == "running" and job.worker_id == "worker-b" and job.compute_seconds == 0
        assert not session.scalars(select(Metric).where(Metric.job_id == job_id)).all()
        assert not session.scalars(select(JobEvent).where(JobEvent.job_id == job_id, JobEvent.message == "late")).all()
    assert new.store.list_dir(f"checkpoints/{rows[0].id}")  # and its files
    assert old.stop_reason() == "lease-lost"


def test_two_workers_race_for_one_job_with_duplicated_messages(service, api, worker):
    job = api.post("/v1/jobs", json=TINY_PRETRAIN).json()
    for _ in range(5):  # the same doorbell five more times, all waiting when both workers start
        enqueue(service, job["id"], "default")
    worker(name="a")
    worker(name="b")
    done = wait_for(api, job["id"], timeout=240)
    assert done["state"] == "succeeded" and done["attempt"] == 1, done
    time.sleep(2)  # let the duplicates reach both workers and be skipped
    with session_scope(service.database_url) as session:
        claims = session.scalars(select(JobEvent.message).where(JobEvent.job_id == job["id"],
                                                                JobEvent.message.like("claimed by %"))).all()
        finals = session.scalars(select(Checkpoint).where(Checkpoint.job_id == job["id"], Checkpoint.final)).all()
    assert len(claims) == 1 and len(finals) == 1, (claims, finals)
