"""Deleting a project's datasets, checkpoints and jobs. The rows go in one transaction under the
project's lock (the lock every submit takes before its insert, so no new job can start using an
object between the check that nothing uses it and its deletion); the caller removes the files
(`remove_files`) once that transaction has committed.

What goes with what (README, "Quotas and deletion"):
- a dataset: its uploaded and prepared files, its cached features, and the scores measured on it;
  jobs that ran on it stay (their history), their checkpoints too.
- a checkpoint: its files (every part, the ONNX export), its cached features, and its scores.
- a job: its events, metrics, checkpoints (as above), the scores it recorded, its index file.
Refused (409) while a queued or running job uses the object, while a checkpoint backs an index,
or while a dataset is being scanned. Built-in datasets are shared by every project: 403."""
from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass, field

from sqlalchemy import delete, or_, select
from sqlalchemy.orm import Session

from jobs.lifecycle import TERMINAL
from jobs.quotas import BUILTIN_FORMAT, lock_project
from jobs.settings import Settings
from jobs.storage import ArtifactStore
from jobs.tables import Checkpoint, Dataset, Job, JobEvent, Metric, Score

log = logging.getLogger(__name__)


class NotFound(LookupError):
    pass


class InUse(Exception):
    """The object is in use now (409): the message says by what, and what to do."""


class Shared(Exception):
    """The object is shared by every project and cannot be deleted by one (403)."""


@dataclass
class Removed:
    """What a deletion removed: rows (for the answer) and the artifact prefixes to delete."""
    kind: str
    id: str
    checkpoints: list[str] = field(default_factory=list)
    scores: int = 0
    prefixes: list[str] = field(default_factory=list)
    datasets: list[str] = field(default_factory=list)  # whose cached features go too

    def answer(self) -> dict:
        return {"id": self.id, "object": self.kind, "deleted": True, "checkpoints_deleted": self.checkpoints,
                "scores_deleted": self.scores}


def referenced_checkpoints(spec: dict) -> set[str]:
    """Checkpoint ids a job's spec reads: evaluated, indexed, or a reused tokenizer's."""
    refs = {spec.get("checkpoint"), *(spec.get("checkpoints") or []), (spec.get("tokenizer") or {}).get("checkpoint")}
    return {ref for ref in refs if isinstance(ref, str)}


def _active_jobs(session: Session, project_id: str) -> list[Job]:
    return list(session.scalars(select(Job).where(Job.project_id == project_id, Job.state.not_in(TERMINAL))))


def _check_checkpoints_unused(session: Session, project_id: str, checkpoint_ids: set[str],
                              deleting_job: str | None = None) -> None:
    """InUse when a queued or running job reads one of the checkpoints, or an embed-index job
    (other than the one being deleted) that has not failed serves an index built with one."""
    for job in _active_jobs(session, project_id):
        used = referenced_checkpoints(job.spec or {}) & checkpoint_ids
        if used and job.id != deleting_job:
            raise InUse(f"checkpoint {min(used)} is used by job {job.id} ({job.state}); wait for it to end or "
                        "cancel it first")
    indexes = session.execute(select(Job.id, Job.spec).where(
        Job.project_id == project_id, Job.kind == "embed-index", Job.state == "succeeded")).all()
    for job_id, spec in indexes:
        if job_id != deleting_job and (spec or {}).get("checkpoint") in checkpoint_ids:
            raise InUse(f"checkpoint {spec['checkpoint']} serves the index of job {job_id}; delete that job first")


def _drop_checkpoints(session: Session, removed: Removed, checkpoint_ids: list[str]) -> None:
    if not checkpoint_ids:
        return
    removed.scores += session.execute(delete(Score).where(Score.checkpoint_id.in_(checkpoint_ids))).rowcount
    session.execute(delete(Checkpoint).where(Checkpoint.id.in_(checkpoint_ids)))
    removed.checkpoints += checkpoint_ids
    for checkpoint_id in checkpoint_ids:
        removed.prefixes += [f"checkpoints/{checkpoint_id}", f"features/{checkpoint_id}"]


def delete_dataset(session: Session, project_id: str, dataset_id: str) -> Removed:
    dataset = _locked_own(session, project_id, Dataset, dataset_id, "dataset")
    if dataset.format == BUILTIN_FORMAT:
        raise Shared(f"dataset {dataset_id} is the built-in {dataset.name!r}, shared by every project: it cannot be "
                     "deleted (it stores nothing of this project's and counts against no quota)")
    if dataset.state not in ("ready", "invalid"):
        raise InUse(f"dataset {dataset_id} is being scanned ({dataset.state}); delete it once it is ready or invalid")
    users = [job for job in _active_jobs(session, project_id) if (job.spec or {}).get("dataset") == dataset_id]
    if users:
        raise InUse(f"dataset {dataset_id} is used by job {users[0].id} ({users[0].state}); wait for it to end or "
                    "cancel it first")
    removed = Removed("dataset", dataset_id, prefixes=[f"datasets/{dataset_id}"], datasets=[dataset_id])
    removed.scores = session.execute(delete(Score).where(Score.project_id == project_id,
                                                         Score.dataset_id == dataset_id)).rowcount
    session.delete(dataset)
    session.flush()
    return removed


def _locked_own(session: Session, project_id: str, table, object_id: str, noun: str):
    """The project's row locked (deletes and submits take it in turn), then its object: another
    project's id is not found, as for every read."""
    lock_project(session, project_id)
    row = session.get(table, object_id)
    if row is None or row.project_id != project_id:
        raise NotFound(f"{noun} {object_id!r} not found")
    return row


def delete_checkpoint(session: Session, project_id: str, checkpoint_id: str) -> Removed:
    checkpoint = _locked_own(session, project_id, Checkpoint, checkpoint_id, "checkpoint")
    owner = session.get(Job, checkpoint.job_id)
    if owner is not None and owner.state not in TERMINAL:
        raise InUse(f"checkpoint {checkpoint_id} belongs to job {owner.id}, which is {owner.state} (it may resume "
                    "from it); wait for it to end or cancel it first")
    _check_checkpoints_unused(session, project_id, {checkpoint_id})
    removed = Removed("checkpoint", checkpoint_id)
    _drop_checkpoints(session, removed, [checkpoint_id])
    return removed


def delete_job(session: Session, project_id: str, job_id: str) -> Removed:
    job = _locked_own(session, project_id, Job, job_id, "job")
    if job.state not in TERMINAL:
        raise InUse(f"job {job_id} is {job.state}; cancel it first (POST /v1/jobs/{job_id}/cancel), then delete it "
                    "once it has ended")
    checkpoint_ids = list(session.scalars(select(Checkpoint.id).where(Checkpoint.job_id == job_id)))
    _check_checkpoints_unused(session, project_id, set(checkpoint_ids), deleting_job=job_id)
    removed = Removed("job", job_id)
    removed.scores = session.execute(delete(Score).where(Score.eval_job_id == job_id,
                                                         or_(Score.checkpoint_id.is_(None),
                                                             Score.checkpoint_id.not_in(checkpoint_ids)))).rowcount
    _drop_checkpoints(session, removed, checkpoint_ids)
    for table in (Metric, JobEvent):
        session.execute(delete(table).where(table.job_id == job_id))
    if job.kind == "embed-index" and isinstance((job.result or {}).get("key"), str):
        removed.prefixes.append(job.result["key"])
    session.delete(job)
    session.flush()
    return removed


def remove_files(store: ArtifactStore, settings: Settings, removed: Removed) -> None:
    """Delete the artifacts of a committed deletion. A failure is logged, not raised: the rows are
    gone already, and the garbage collector removes unregistered checkpoint folders later."""
    prefixes = list(removed.prefixes)
    for dataset_id in removed.datasets:
        prefixes += _feature_prefixes(store, dataset_id)
        shutil.rmtree(settings.home / "cache" / "datasets" / dataset_id, ignore_errors=True)  # an s3 source's copy
    for prefix in prefixes:
        try:
            store.delete(prefix)
        except (OSError, ValueError):
            log.warning("could not delete %s from the artifact store", prefix, exc_info=True)


def _feature_prefixes(store: ArtifactStore, dataset_id: str) -> list[str]:
    """The cached feature folders of a dataset, one per source (features/SOURCE/DATASET-HASH)."""
    found = []
    try:
        for source, _ in store.list_dir("features"):
            found += [f"features/{source}/{name}" for name, _ in store.list_dir(f"features/{source}")
                      if name.startswith(f"{dataset_id}-")]
    except (OSError, ValueError):
        log.warning("could not list the cached features of dataset %s", dataset_id, exc_info=True)
    return found
