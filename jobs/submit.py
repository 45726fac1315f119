"""Creating jobs: validate a spec against its dataset (the checks of the dataset's modality,
jobs/modalities.py), honour Idempotency-Key, ring the doorbell."""
from __future__ import annotations

import hashlib
import json

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.backbones.sizes import check_options
from core.modalities import of_stats
from jobs import datasets
from jobs.checks import CheckpointNotFound, SpecRejected, check_method_options
from jobs.deletion import referenced_checkpoints
from jobs.ids import new_id
from jobs.lifecycle import log_event
from jobs.modalities import CHECK_EMBED_INDEX, CHECK_EVALUATE, CHECK_PRETRAIN
from jobs.quotas import Quotas, admit_job
from jobs.specs import BASELINES, EmbedIndexSpec, EvaluateSpec, PretrainSpec
from jobs.tables import Checkpoint, Dataset, Job

__all__ = ["CheckpointNotFound", "IdempotencyConflict", "SpecRejected", "create_job"]


class IdempotencyConflict(ValueError):
    pass


def request_hash(spec: PretrainSpec | EvaluateSpec | EmbedIndexSpec) -> str:
    return hashlib.sha256(json.dumps(spec.model_dump(mode="json"), sort_keys=True).encode()).hexdigest()


def check_pretrain(session: Session, project_id: str, spec: PretrainSpec,
                   max_parameters: int | None = None) -> tuple[dict, dict]:
    check_method_options(spec.method, spec.method_options)
    if spec.backbone is not None:  # options refused before the dataset is even looked at
        try:
            check_options(spec.backbone, spec.backbone_options)
        except ValueError as exc:
            raise SpecRejected(str(exc)) from exc
    dataset = datasets.resolve(session, project_id, spec.dataset)
    if dataset.state != "ready":
        raise SpecRejected(f"dataset {dataset.id} is {dataset.state}: {dataset.error or 'not scanned yet'}")
    return CHECK_PRETRAIN[of_stats(dataset.stats)](session, project_id, spec, dataset, max_parameters)


def check_evaluate(session: Session, project_id: str, spec: EvaluateSpec, max_parameters: int | None = None) -> dict:
    dataset = datasets.resolve(session, project_id, spec.dataset)
    return CHECK_EVALUATE[of_stats(dataset.stats)](session, project_id, spec, dataset, max_parameters)


def check_embed_index(session: Session, project_id: str, spec: EmbedIndexSpec) -> dict:
    dataset = datasets.resolve(session, project_id, spec.dataset)
    return CHECK_EMBED_INDEX[of_stats(dataset.stats)](session, project_id, spec, dataset)


def check_still_there(session: Session, spec_dict: dict) -> None:
    """After the project's lock: the dataset and checkpoints the spec names were not deleted while
    it was checked (a deletion takes the same lock)."""
    if session.scalar(select(Dataset.id).where(Dataset.id == spec_dict["dataset"])) is None:
        raise datasets.DatasetNotFound(f"dataset {spec_dict['dataset']!r} not found (deleted)")
    for checkpoint_id in referenced_checkpoints(spec_dict) - set(BASELINES):
        if session.scalar(select(Checkpoint.id).where(Checkpoint.id == checkpoint_id)) is None:
            raise CheckpointNotFound(f"checkpoint {checkpoint_id!r} not found (deleted)")


def create_job(session: Session, project_id: str, spec: PretrainSpec | EvaluateSpec | EmbedIndexSpec,
               idempotency_key: str | None = None, max_parameters: int | None = None,
               default_max_attempts: int = 3, quotas: Quotas | None = None) -> tuple[Job, bool]:
    """Returns (job, created). An Idempotency-Key seen before returns the same job for the same
    body and raises IdempotencyConflict for a different one. `max_parameters` caps the model's
    estimated and built size. With `quotas`, the project's lock is taken after the (slow) checks
    and before the insert, and QuotaExceeded raised when the job does not fit."""
    digest = request_hash(spec)
    if idempotency_key:
        existing = session.scalar(select(Job).where(Job.project_id == project_id, Job.idempotency_key == idempotency_key))
        if existing is not None:
            if existing.request_hash != digest:
                raise IdempotencyConflict("Idempotency-Key was already used with a different request body")
            return existing, False
    total, recipe = 0, None
    if isinstance(spec, PretrainSpec):
        spec_dict, recipe = check_pretrain(session, project_id, spec, max_parameters)
        total = recipe["train"]["steps"]
    elif isinstance(spec, EmbedIndexSpec):
        spec_dict = check_embed_index(session, project_id, spec)
    else:
        spec_dict = check_evaluate(session, project_id, spec, max_parameters)
    if quotas is not None:
        admit_job(session, quotas, project_id, spec.kind)
        check_still_there(session, spec_dict)
    job = Job(id=new_id("job"), project_id=project_id, kind=spec.kind, spec=spec_dict, recipe=recipe, queue=spec.queue,
              method=getattr(spec, "method", None), max_attempts=spec.max_attempts or default_max_attempts, total_steps=total,
              nodes=getattr(spec, "nodes", 1), devices=getattr(spec, "devices", 1),
              idempotency_key=idempotency_key, request_hash=digest, state="queued", result={})
    session.add(job)
    session.flush()
    log_event(session, job.id, "state", "queued", state="queued")
    return job, True
