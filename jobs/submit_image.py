"""The submit checks of a job on an image dataset: the spec resolves on the dataset's image size,
the views and patches stay within what a worker can train, checkpoints take its channels."""
from __future__ import annotations

import torch
from sqlalchemy.orm import Session

from core.backbones import backbone_modality, build_backbone
from core.backbones.sizes import token_count
from core.methods import method_info
from core.modalities import IMAGE, of_manifest
from jobs.checks import (SpecRejected, built_size, check_backbone, check_checkpoint, check_size, parameter_count)
from jobs.images import is_streamed
from jobs.specs import BASELINES, EmbedIndexSpec, EvaluateSpec, PretrainSpec
from jobs.tables import Checkpoint

MAX_VIEWS = 64  # crops per image, all scales together (DINO's multi-crop uses 2 + 10)
MAX_TOKENS = 16_384  # patches per image: a 1024-px image at patch 8


def check_pretrain(session: Session, project_id: str, spec: PretrainSpec, dataset,
                   max_parameters: int | None = None) -> tuple[dict, dict]:
    modality = method_info(spec.method).modality
    if modality != IMAGE:
        raise SpecRejected(f"{spec.method} is a {modality} method; dataset {dataset.id} holds images")
    if spec.backbone is not None and backbone_modality(spec.backbone) not in (None, IMAGE):
        raise SpecRejected(f"{spec.backbone} is a {backbone_modality(spec.backbone)} backbone; "
                           f"dataset {dataset.id} holds images")
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


def check_channels(ckpt: Checkpoint, dataset) -> None:
    expected = (ckpt.manifest.get("input_size") or [None])[0]
    channels = (dataset.stats or {}).get("channels")
    if expected is not None and channels is not None and expected != channels:
        raise SpecRejected(f"checkpoint {ckpt.id} takes {expected}-channel images; dataset {dataset.id} has {channels}")


def check_image_sources(session: Session, project_id: str, dataset, sources: list[str]) -> None:
    for source in sources:
        if source in ("tfidf", "mfcc"):
            raise SpecRejected(f"{source} is a {'text' if source == 'tfidf' else 'audio'} baseline; "
                               f"dataset {dataset.id} holds images")
        if source not in BASELINES:
            modality = of_manifest(check_checkpoint(session, project_id, source).manifest)
            if modality != IMAGE:
                raise SpecRejected(f"checkpoint {source} is a {modality} model; dataset {dataset.id} holds images")


def check_evaluate(session: Session, project_id: str, spec: EvaluateSpec, dataset,
                   max_parameters: int | None = None) -> dict:
    check_image_sources(session, project_id, dataset, spec.sources())
    if dataset.state != "ready" or is_streamed(dataset):
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


def check_embed_index(session: Session, project_id: str, spec: EmbedIndexSpec, dataset) -> dict:
    check_image_sources(session, project_id, dataset, [spec.checkpoint])
    if dataset.state != "ready" or is_streamed(dataset):
        raise SpecRejected(f"dataset {dataset.id} cannot be indexed ({dataset.state}, {dataset.format}); "
                           "an index needs a ready image dataset held in memory")
    check_channels(check_checkpoint(session, project_id, spec.checkpoint), dataset)
    spec_dict = spec.model_dump(mode="json")
    spec_dict["dataset"] = dataset.id
    return spec_dict
