"""Creating jobs: validate a spec against its dataset, honour Idempotency-Key, ring the doorbell."""
from __future__ import annotations

import hashlib
import json
from functools import lru_cache

import torch
from sqlalchemy import select
from sqlalchemy.orm import Session

from core.backbones import build_backbone
from core.backbones.sizes import check_options, estimate_parameters, token_count
from core.backbones.text import TEXT_BACKBONES
from core.methods import build_resolved, method_info
from jobs import datasets, text
from jobs.deletion import referenced_checkpoints
from jobs.ids import new_id
from jobs.lifecycle import log_event
from jobs.quotas import Quotas, admit_job
from jobs.specs import BASELINES, EmbedIndexSpec, EvaluateSpec, PretrainSpec
from jobs.tables import Checkpoint, Dataset, Job


class SpecRejected(ValueError):
    """The spec is well-formed but cannot run (e.g. batch larger than the dataset)."""


class IdempotencyConflict(ValueError):
    pass


def request_hash(spec: PretrainSpec | EvaluateSpec | EmbedIndexSpec) -> str:
    return hashlib.sha256(json.dumps(spec.model_dump(mode="json"), sort_keys=True).encode()).hexdigest()


def check_pretrain(session: Session, project_id: str, spec: PretrainSpec,
                   max_parameters: int | None = None) -> tuple[dict, int]:
    check_method_options(spec.method, spec.method_options)
    if spec.backbone is not None:  # options refused before the dataset is even looked at
        try:
            check_options(spec.backbone, spec.backbone_options)
        except ValueError as exc:
            raise SpecRejected(str(exc)) from exc
    dataset = datasets.resolve(session, project_id, spec.dataset)
    if dataset.state != "ready":
        raise SpecRejected(f"dataset {dataset.id} is {dataset.state}: {dataset.error or 'not scanned yet'}")
    if text.is_text(dataset):
        return check_text_pretrain(session, project_id, spec, dataset, max_parameters)
    if method_info(spec.method).modality == "text":
        raise SpecRejected(f"{spec.method} is a text method; dataset {dataset.id} holds images")
    if spec.backbone in TEXT_BACKBONES:
        raise SpecRejected(f"{spec.backbone} is a text backbone; dataset {dataset.id} holds images")
    stats = dataset.stats or {}
    stored = stats.get("stored_short_side")  # images kept at their aspect: crops are cut from this side
    if stored and spec.image_size and spec.image_size > stored:
        raise SpecRejected(f"image_size {spec.image_size} is larger than dataset {dataset.id}'s stored images "
                           f"(shorter side {stored} px): crops would be upsampled; train at most at {stored}, or "
                           f"upload the dataset again with a larger short_side")
    try:
        recipe = spec.resolve(stats.get("image_size", 32), dataset.n_items or 0)
    except ValueError as exc:
        raise SpecRejected(str(exc)) from exc
    check_backbone(recipe["backbone"], recipe["backbone_options"], stats.get("channels", 3), recipe["image_size"],
                   max_parameters)
    check_workload(recipe)
    size = built_size(spec.method, recipe, stats.get("channels", 3))
    check_size(f"{spec.method} with {recipe['backbone']}", size, max_parameters)
    spec_dict = spec.model_dump(mode="json", exclude_none=True)
    spec_dict["dataset"] = dataset.id
    return spec_dict, recipe


def check_text_pretrain(session: Session, project_id: str, spec: PretrainSpec, dataset,
                        max_parameters: int | None = None) -> tuple[dict, dict]:
    if spec.devices * spec.nodes > 1:
        raise SpecRejected("text methods train on one device for now; drop devices/nodes")
    try:
        text.check_text_spec(spec, dataset, method_info(spec.method).modality)
        reused = (text.checkpoint_tokenizer(session, project_id, spec.tokenizer.checkpoint)
                  if spec.tokenizer and spec.tokenizer.checkpoint else None)
        recipe = spec.resolve(0, dataset.n_items or 0, tokenizer=reused)
        text.check_capacity(recipe, dataset)
    except (ValueError, LookupError) as exc:
        raise SpecRejected(str(exc)) from exc
    # The same bounds as an image model: the user's options within bounds, then the size computed
    # from them (the tokenizer's vocab_size included), all before anything is built.
    check_backbone(recipe["backbone"], spec.backbone_options, 1, 0, None)
    check_estimate(recipe["backbone"], recipe["backbone_options"], 1, 0, max_parameters)
    check_size(f"{spec.method} with {recipe['backbone']}", built_size(spec.method, recipe, 1), max_parameters)
    spec_dict = spec.model_dump(mode="json", exclude_none=True)
    spec_dict["dataset"] = dataset.id
    return spec_dict, recipe


def try_build(method: str, recipe: dict, channels: int) -> torch.nn.Module:
    """Build the method on the meta device (no memory, no compute) so that bad augmentation,
    backbone or method options are a 422 now rather than a failed job later."""
    try:
        with torch.device("meta"):
            return build_resolved(recipe, channels)
    except (TypeError, ValueError, OverflowError) as exc:
        raise SpecRejected(f"cannot build {method}: {exc}") from exc


# What core.methods.build_resolved reads of a recipe: the same values build the same model.
BUILD_KEYS = ("modality", "method", "scale", "image_size", "backbone", "backbone_options", "views", "method_options")


@lru_cache(maxsize=256)
def _built_size(method: str, build_recipe: str, channels: int) -> int:
    return parameter_count(try_build(method, json.loads(build_recipe), channels))


def built_size(method: str, recipe: dict, channels: int) -> int:
    """try_build's parameter count, remembered for the recipe's build values: specs that differ
    only in what the build does not read (seed, steps, learning rate, ...) are built once. Only
    successes are remembered; a recipe that cannot build raises SpecRejected every time."""
    build_recipe = json.dumps({key: recipe.get(key) for key in BUILD_KEYS}, sort_keys=True)
    return _built_size(method, build_recipe, channels)


LAYER_COUNTS = ("depth", "heads", "targets")  # each one more module: built one by one even on the meta device


def check_method_options(method: str, options: dict) -> None:
    """Integer method options within bounds before anything is built: layer counts (decoder_depth,
    num_heads, ...) at most 64, other counts at most 64 times the method's default (sizes are
    then caught by the parameter count)."""
    defaults = method_info(method).options()
    for name, value in options.items():
        default = defaults.get(name)
        if isinstance(default, bool) or not isinstance(default, int):
            continue
        bound = 64 if any(word in name for word in LAYER_COUNTS) else max(64, 64 * default)
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= bound:
            raise SpecRejected(f"method_options.{name} must be an integer from 0 to {bound:,}")


def check_backbone(name: str, options: dict, channels: int, image_size: int, max_parameters: int | None) -> None:
    """Known options of the right types within bounds, and an estimated size under the limit,
    before any module is built (a huge depth would take the API's memory and time even on meta)."""
    try:
        check_options(name, options)
    except ValueError as exc:
        raise SpecRejected(str(exc)) from exc
    check_estimate(name, options, channels, image_size, max_parameters)


def check_estimate(name: str, options: dict, channels: int, image_size: int, max_parameters: int | None) -> None:
    estimate = estimate_parameters(name, channels, image_size, options)
    if max_parameters and estimate is not None and estimate > max_parameters:
        raise SpecRejected(f"backbone {name} with {options} would have about {estimate:,} parameters; "
                           f"at most {max_parameters:,} (DARKMATTER_MAX_MODEL_PARAMETERS)")


MAX_VIEWS = 64  # crops per image, all scales together (DINO's multi-crop uses 2 + 10)
MAX_TOKENS = 16_384  # patches per image: a 1024-px image at patch 8


def check_workload(recipe: dict) -> None:
    """What a worker could never train: views per image or ViT tokens far beyond any recipe (the
    job would run out of memory on its first step)."""
    views = sum(int(crop.get("count", 1)) for crop in recipe["views"].get("crops", []))
    if views > MAX_VIEWS:
        raise SpecRejected(f"augment asks for {views:,} views per image; at most {MAX_VIEWS}")
    tokens = token_count(recipe["backbone"], recipe["image_size"], recipe["backbone_options"])
    if tokens is not None and tokens > MAX_TOKENS:
        raise SpecRejected(f"{recipe['backbone']} would see {tokens:,} patches per {recipe['image_size']}-px image; "
                           f"at most {MAX_TOKENS:,} (raise patch_size)")


def parameter_count(model: torch.nn.Module) -> int:
    """Parameters and buffers, heads and queues included."""
    return sum(t.numel() for t in model.parameters()) + sum(t.numel() for t in model.buffers())


def check_size(what: str, size: int, max_parameters: int | None) -> None:
    """A built (meta) model's parameter_count under the limit."""
    if max_parameters and size > max_parameters:
        raise SpecRejected(f"{what} would have {size:,} parameters and buffers; at most {max_parameters:,} "
                           "(DARKMATTER_MAX_MODEL_PARAMETERS)")


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
                       backbone: str | None = None, backbone_options: dict | None = None,
                       max_parameters: int | None = None) -> None:
    """Text datasets take text checkpoints and the tfidf / random-init baselines."""
    if "random-init" in sources:
        name = backbone or "text_tiny"
        if name not in TEXT_BACKBONES:
            raise SpecRejected(f"{name} is an image backbone; dataset {dataset.id} is text "
                               f"(text backbones: {', '.join(TEXT_BACKBONES)})")
        check_backbone(name, backbone_options or {}, 1, 0, None)  # options bounded before the estimate and build
        check_estimate(name, {"vocab_size": 8000, **(backbone_options or {})}, 1, 0, max_parameters)
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


def check_evaluate(session: Session, project_id: str, spec: EvaluateSpec, max_parameters: int | None = None) -> dict:
    dataset = datasets.resolve(session, project_id, spec.dataset)
    if text.is_text(dataset) and dataset.state == "ready":
        if not (dataset.stats or {}).get("labelled"):
            raise SpecRejected(f"dataset {dataset.id} has no labels to evaluate against")
        check_text_sources(session, project_id, dataset, spec.sources(), spec.backbone, spec.backbone_options,
                           max_parameters)
        return {**spec.model_dump(mode="json"), "dataset": dataset.id}
    check_image_sources(session, project_id, dataset, spec.sources())
    if dataset.state != "ready" or datasets.is_streamed(dataset) or (dataset.stats or {}).get("modality") == "text":
        raise SpecRejected(f"dataset {dataset.id} cannot be evaluated on ({dataset.state}, {dataset.format}); "
                           "evaluation needs a ready image dataset held in memory")
    if not (dataset.stats or {}).get("labelled"):
        raise SpecRejected(f"dataset {dataset.id} has no labels to evaluate against")
    if "random-init" in spec.sources():
        name, channels = spec.backbone or "resnet18", (dataset.stats or {}).get("channels", 3)
        image_size = (dataset.stats or {}).get("image_size", 32)
        check_backbone(name, spec.backbone_options, channels, image_size, max_parameters)
        try:
            with torch.device("meta"):
                model = build_backbone(name, in_channels=channels, image_size=image_size, **spec.backbone_options)
        except (TypeError, ValueError) as exc:
            raise SpecRejected(f"cannot build the random-init backbone: {exc}") from exc
        check_size(f"random-init {name}", parameter_count(model), max_parameters)
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
