"""Retention keeps the newest N, the best, the final and scored checkpoints of a job; the garbage
collector deletes only old checkpoint folders that no row refers to."""
from __future__ import annotations

import os
import time

import torch
from sqlalchemy import select

from jobs import checkpoints, datasets, retention
from jobs.db import session_scope
from jobs.ids import new_id
from jobs.storage import ArtifactStore
from jobs.tables import DEFAULT_PROJECT, Checkpoint, Job, Score
from workers.runner import collect_garbage


def make_job(settings) -> str:
    with session_scope(settings.database_url) as session:
        datasets.register_builtin(session, DEFAULT_PROJECT, "digits")
        job = Job(id=new_id("job"), project_id=DEFAULT_PROJECT, kind="pretrain", spec={}, queue="default", result={})
        session.add(job)
        return job.id


def add_checkpoint(settings, store, job_id: str, step: int, loss: float, final: bool = False) -> str:
    with session_scope(settings.database_url) as session:
        row = checkpoints.register(session, store, project_id=DEFAULT_PROJECT, job_id=job_id, step=step, final=final,
                                   method="simclr", backbone="small_cnn", dataset_id=None,
                                   trees={"backbone": {"w": torch.full((2,), float(step))}},
                                   manifest={"metrics": {"loss": loss}})
        return row.id


def test_prune_keeps_newest_best_final_and_scored(service):
    store = ArtifactStore(service.storage_url)
    job_id = make_job(service)
    losses = {10: 5.0, 20: 1.0, 30: 4.0, 40: 3.0, 50: 2.5, 60: 2.0}
    ids = {step: add_checkpoint(service, store, job_id, step, loss) for step, loss in losses.items()}
    ids[70] = add_checkpoint(service, store, job_id, 70, 2.2, final=True)
    with session_scope(service.database_url) as session:
        session.add(Score(project_id=DEFAULT_PROJECT, checkpoint_id=ids[30], dataset_id="ds", protocol="knn",
                          metric="top1", value=0.5))
    with session_scope(service.database_url) as session:
        dropped = retention.prune(session, job_id, keep_last=2)
    retention.delete_files(store, dropped)
    with session_scope(service.database_url) as session:
        kept = {row.step for row in session.scalars(select(Checkpoint).where(Checkpoint.job_id == job_id))}
    assert kept == {60, 70, 20, 30}  # newest two (one is the final), lowest loss, scored
    assert sorted(dropped) == sorted([ids[10], ids[40], ids[50]])
    for step, checkpoint_id in ids.items():
        assert store.exists(checkpoints.part_key(checkpoint_id, "backbone")) == (step in kept)


def test_garbage_collector_deletes_only_old_unregistered_folders(service):
    store = ArtifactStore(service.storage_url)
    job_id = make_job(service)
    registered = add_checkpoint(service, store, job_id, 10, 1.0)
    old_orphan, young_orphan = "ckpt_orphan_old", "ckpt_orphan_young"
    for orphan in (old_orphan, young_orphan):  # a child killed between writing files and registering them
        path = store.staging_path(checkpoints.part_key(orphan, "full"))
        path.write_bytes(b"torn")
    hour_ago = time.time() - 2 * service.gc_min_age
    for path in (store.root / "checkpoints").rglob("*"):
        if old_orphan in str(path) or registered in str(path):
            os.utime(path, (hour_ago, hour_ago))
    assert collect_garbage(service) == [old_orphan]
    assert not store.exists(f"checkpoints/{old_orphan}")
    assert store.exists(f"checkpoints/{young_orphan}")  # may be a checkpoint being written right now
    assert store.exists(checkpoints.part_key(registered, "backbone"))


def test_prune_with_two_checkpoints_at_one_step(service):
    """A cancel or shutdown checkpoint can land on the step of a periodic one."""
    store = ArtifactStore(service.storage_url)
    job_id = make_job(service)
    best = add_checkpoint(service, store, job_id, 10, 1.0)
    add_checkpoint(service, store, job_id, 20, 3.0)
    add_checkpoint(service, store, job_id, 20, 3.0)
    with session_scope(service.database_url) as session:
        dropped = retention.prune(session, job_id, keep_last=1)
        kept = session.scalars(select(Checkpoint).where(Checkpoint.job_id == job_id)).all()
    assert len(dropped) == 1 and {row.step for row in kept} == {10, 20} and best in {row.id for row in kept}
