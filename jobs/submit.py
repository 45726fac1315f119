"""Creating jobs: validate a spec against its dataset, honour Idempotency-Key, ring the doorbell."""
from __future__ import annotations

import hashlib
import json

import torch
from sqlalchemy import select
from sqlalchemy.orm import Session

from core.backbones import build_backbone
from core.backbones.text import TEXT_BACKBONES
from core.methods import build_resolved, method_info
from jobs import datasets, text
from jobs.ids import new_id
from jobs.lifecycle import log_event
from jobs.specs import BASELINES, EmbedIndexSpec, EvaluateSpec, PretrainSpec
from jobs.tables import Checkpoint, Job


class SpecRejected(ValueError):
    """The spec is well-formed but cannot run (e.g. batch larger than the dataset)."""


class IdempotencyConflict(ValueError):
    pass


def request_hash(spec: PretrainSpec | EvaluateSpec | EmbedIndexSpec) -> str:
    return hashlib.sha256(json.dumps(spec.model_dump(mode="json"), sort_keys=True).encode()).hexdigest()


def check_pretrain(session: Session, project_id: str, spec: PretrainSpec) -> tuple[dict, int]:
    dataset = datasets.resolve(session, project_id, spec.dataset)
    if dataset.state != "ready":
        raise SpecRejected(f"dataset {dataset.id} is {dataset.state}: {dataset.error or 'not scanned yet'}")
    if text.is_text(dataset):
        return check_text_pretrain(session, project_id, spec, dataset)
    if method_info(spec.method).modality == "text":
        raise SpecRejected(f"{spec.method} is a text method; dataset {dataset.id} holds images")
    if spec.backbone in TEXT_BACKBONES:
        raise SpecRejected(f"{spec.backbone} is a text backbone; dataset {dataset.id} holds images")
    stats = dataset.stats or {}
    try:
        recipe = spec.resolve(stats.get("image_size", 32), dataset.n_items or 0)
    except ValueError as exc:
        raise SpecRejected(str(exc)) from exc
    try_build(spec.method, recipe, stats.get("channels", 3))
    spec_dict = spec.model_dump(mode="json", exclude_none=True)
    spec_dict["dataset"] = dataset.id
    return spec_dict, recipe


def check_text_pretrain(session: Session, project_id: str, spec: PretrainSpec, dataset) -> tuple[dict, dict]:
    try:
        text.check_text_spec(spec, dataset, method_info(spec.method).modality)
        reused = (text.checkpoint_tokenizer(session, project_id, spec.tokenizer.checkpoint)
                  if spec.tokenizer and spec.tokenizer.checkpoint else None)
        recipe = spec.resolve(0, dataset.n_items or 0, tokenizer=reused)
        text.check_capacity(recipe, dataset)
    except (ValueError, LookupError) as exc:
        raise SpecRejected(str(exc)) from exc
    try_build(spec.method, recipe, 1)
    spec_dict = spec.model_dump(mode="json", exclude_none=True)
    spec_dict["dataset"] = dataset.id
    return spec_dict, recipe


def try_build(method: str, recipe: dict, channels: int) -> None:
    """Build the method on the meta device (no memory, no compute) so that bad augmentation,
    backbone or method options are a 422 now rather than a failed job later."""
    try:
        with torch.device("meta"):
            build_resolved(recipe, channels)
    except (TypeError, ValueError) as exc:
        raise SpecRejected(f"cannot build {method}: {exc}") from exc


class CheckpointNotFound(LookupError):
    pass


def check_checkpoint(session: Session, project_id: str, checkpoint_id: str) -> Checkpoint:
    ckpt = session.get(Checkpoint, checkpoint_id)
    if ckpt is None or ckpt.project_id != project_id:
        raise CheckpointNotFound(f"checkpoint {checkpoint_id!r} not found (baselines: {', '.join(BASELINES)})")
    return ckpt


def check_channels(ckpt: Checkpoint, dataset) -> None:
    expected = (ckpt.manifest.get("input_size") or [None])[0]
    channels = (dataset.stats or {}).get("channels")
    if expected is not None and channels is not None and expected != channels:
        raise SpecRejected(f"checkpoint {ckpt.id} takes {expected}-channel images; dataset {dataset.id} has {channels}")


def check_text_sources(session: Session, project_id: str, dataset, sources: list[str],
                       backbone: str | None = None, backbone_options: dict | None = None) -> None:
    """Text datasets take text checkpoints and the tfidf / random-init baselines."""
    if "random-init" in sources:
        try:
            with torch.device("meta"):
                options = {"vocab_size": 8000, **(backbone_options or {})}
                build_backbone(backbone or "text_tiny", in_channels=1, image_size=0, **options)
        except (TypeError, ValueError) as exc:
            raise SpecRejected(f"cannot build the random-init text backbone: {exc}") from exc
    for source in sources:
        if source == "raw-pixels":
            raise SpecRejected(f"dataset {dataset.id} is text: use the baselines tfidf or random-init")
        if source not in BASELINES and check_checkpoint(session, project_id, source).manifest.get("modality") != "text":
            raise SpecRejected(f"checkpoint {source} embeds images; dataset {dataset.id} is text")


def check_image_sources(session: Session, project_id: str, dataset, sources: list[str]) -> None:
    for source in sources:
        if source == "tfidf":
            raise SpecRejected(f"tfidf is a text baseline; dataset {dataset.id} holds images")
        if source not in BASELINES and check_checkpoint(session, project_id, source).manifest.get("modality") == "text":
            raise SpecRejected(f"checkpoint {source} is a text model; dataset {dataset.id} holds images")


def check_evaluate(session: Session, project_id: str, spec: EvaluateSpec) -> dict:
    dataset = datasets.resolve(session, project_id, spec.dataset)
    if text.is_text(dataset) and dataset.state == "ready":
        if not (dataset.stats or {}).get("labelled"):
            raise SpecRejected(f"dataset {dataset.id} has no labels to evaluate against")
        check_text_sources(session, project_id, dataset, spec.sources(), spec.backbone, spec.backbone_options)
        return {**spec.model_dump(mode="json"), "dataset": dataset.id}
    check_image_sources(session, project_id, dataset, spec.sources())
    if dataset.state != "ready" or datasets.is_streamed(dataset) or (dataset.stats or {}).get("modality") == "text":
        raise SpecRejected(f"dataset {dataset.id} cannot be evaluated on ({dataset.state}, {dataset.format}); "
                           "evaluation needs a ready image dataset held in memory")
    if not (dataset.stats or {}).get("labelled"):
        raise SpecRejected(f"dataset {dataset.id} has no labels to evaluate against")
    if "random-init" in spec.sources():
        try:
            with torch.device("meta"):
                build_backbone(spec.backbone or "resnet18", in_channels=(dataset.stats or {}).get("channels", 3),
                               image_size=(dataset.stats or {}).get("image_size", 32), **spec.backbone_options)
        except (TypeError, ValueError) as exc:
            raise SpecRejected(f"cannot build the random-init backbone: {exc}") from exc
    for source in spec.sources():
        if source not in BASELINES:
            check_channels(check_checkpoint(session, project_id, source), dataset)
    spec_dict = spec.model_dump(mode="json")
    spec_dict["dataset"] = dataset.id
    return spec_dict


def check_embed_index(session: Session, project_id: str, spec: EmbedIndexSpec) -> dict:
    dataset = datasets.resolve(session, project_id, spec.dataset)
    if text.is_text(dataset) and dataset.state == "ready":
        check_checkpoint(session, project_id, spec.checkpoint)
        check_text_sources(session, project_id, dataset, [spec.checkpoint])
        return {**spec.model_dump(mode="json"), "dataset": dataset.id}
    check_image_sources(session, project_id, dataset, [spec.checkpoint])
    if dataset.state != "ready" or datasets.is_streamed(dataset) or (dataset.stats or {}).get("modality") == "text":
        raise SpecRejected(f"dataset {dataset.id} cannot be indexed ({dataset.state}, {dataset.format}); "
                           "an index needs a ready image dataset held in memory")
    check_channels(check_checkpoint(session, project_id, spec.checkpoint), dataset)
    spec_dict = spec.model_dump(mode="json")
    spec_dict["dataset"] = dataset.id
    return spec_dict


def create_job(session: Session, project_id: str, spec: PretrainSpec | EvaluateSpec | EmbedIndexSpec,
               idempotency_key: str | None = None) -> tuple[Job, bool]:
    """Returns (job, created). An Idempotency-Key seen before returns the same job for the same
    body and raises IdempotencyConflict for a different one."""
    digest = request_hash(spec)
    if idempotency_key:
        existing = session.scalar(select(Job).where(Job.project_id == project_id, Job.idempotency_key == idempotency_key))
        if existing is not None:
            if existing.request_hash != digest:
                raise IdempotencyConflict("Idempotency-Key was already used with a different request body")
            return existing, False
    total, recipe = 0, None
    if isinstance(spec, PretrainSpec):
        spec_dict, recipe = check_pretrain(session, project_id, spec)
        total = recipe["train"]["steps"]
    elif isinstance(spec, EmbedIndexSpec):
        spec_dict = check_embed_index(session, project_id, spec)
    else:
        spec_dict = check_evaluate(session, project_id, spec)
    job = Job(id=new_id("job"), project_id=project_id, kind=spec.kind, spec=spec_dict, recipe=recipe, queue=spec.queue,
              method=getattr(spec, "method", None), max_attempts=spec.max_attempts, total_steps=total,
              idempotency_key=idempotency_key, request_hash=digest, state="queued", result={})
    session.add(job)
    session.flush()
    log_event(session, job.id, "state", "queued", state="queued")
    return job, True
