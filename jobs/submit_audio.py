"""The submit checks of a job on an audio dataset: an audio method and backbone, the model's size
under the limit, audio checkpoints and the audio baselines (mfcc, random-init)."""
from __future__ import annotations

import json
from functools import lru_cache

import torch
from sqlalchemy.orm import Session

from core.backbones import backbone_modality, build_backbone
from core.methods import method_info
from core.modalities import AUDIO, of_manifest
from jobs.audio import AUDIO_BASELINES
from jobs.checks import SpecRejected, check_backbone, check_checkpoint, check_size, parameter_count
from jobs.specs import BASELINES, EmbedIndexSpec, EvaluateSpec, PretrainSpec

BUILD_KEYS = ("method", "backbone", "backbone_options", "method_options")


@lru_cache(maxsize=256)
def _built_size(build_recipe: str) -> int:
    from core.methods.wav2vec2 import build_audio

    try:
        with torch.device("meta"):
            return parameter_count(build_audio(json.loads(build_recipe)))
    except (TypeError, ValueError, OverflowError) as exc:
        raise SpecRejected(f"cannot build {json.loads(build_recipe)['method']}: {exc}") from exc


def built_size(recipe: dict) -> int:
    """The audio method's parameter count, built on the meta device once per build values."""
    return _built_size(json.dumps({key: recipe.get(key) for key in BUILD_KEYS}, sort_keys=True))


def check_audio_spec(spec: PretrainSpec, dataset) -> None:
    modality = method_info(spec.method).modality
    if modality != AUDIO:
        raise SpecRejected(f"{spec.method} is a {modality} method; dataset {dataset.id} holds audio "
                           "(audio methods: see GET /v1/methods, modality audio)")
    if spec.backbone is not None and backbone_modality(spec.backbone) != AUDIO:
        raise SpecRejected(f"{spec.backbone} is a {backbone_modality(spec.backbone) or 'image'} backbone; "
                           f"dataset {dataset.id} holds audio")
    unused = [name for name, value in (("image_size", spec.image_size), ("augment", spec.augment),
                                       ("tokenizer", spec.tokenizer), ("health_every", spec.health_every)) if value]
    if unused:
        raise SpecRejected(f"{', '.join(unused)}: not used by audio methods")
    if spec.devices * spec.nodes > 1:
        raise SpecRejected("audio methods train on one device for now; drop devices/nodes")


def check_pretrain(session: Session, project_id: str, spec: PretrainSpec, dataset,
                   max_parameters: int | None = None) -> tuple[dict, dict]:
    check_audio_spec(spec, dataset)
    try:
        recipe = spec.resolve(0, dataset.n_items or 0)
    except ValueError as exc:
        raise SpecRejected(str(exc)) from exc
    check_backbone(recipe["backbone"], recipe["backbone_options"], 1, 0, max_parameters)
    check_size(f"{spec.method} with {recipe['backbone']}", built_size(recipe), max_parameters)
    spec_dict = spec.model_dump(mode="json", exclude_none=True)
    spec_dict["dataset"] = dataset.id
    return spec_dict, recipe


def check_audio_sources(session: Session, project_id: str, dataset, sources: list[str]) -> None:
    for source in sources:
        if source in BASELINES and source not in AUDIO_BASELINES:
            raise SpecRejected(f"{source} is not an audio baseline; dataset {dataset.id} holds audio "
                               f"(baselines: {', '.join(AUDIO_BASELINES)})")
        if source not in AUDIO_BASELINES:
            modality = of_manifest(check_checkpoint(session, project_id, source).manifest)
            if modality != AUDIO:
                raise SpecRejected(f"checkpoint {source} is a {modality} model; dataset {dataset.id} holds audio")


def check_evaluate(session: Session, project_id: str, spec: EvaluateSpec, dataset,
                   max_parameters: int | None = None) -> dict:
    if dataset.state != "ready":
        raise SpecRejected(f"dataset {dataset.id} is {dataset.state}: {dataset.error or 'not scanned yet'}")
    if not (dataset.stats or {}).get("labelled"):
        raise SpecRejected(f"dataset {dataset.id} has no labels to evaluate against")
    check_audio_sources(session, project_id, dataset, spec.sources())
    if "random-init" in spec.sources() and spec.backbone is not None:
        if backbone_modality(spec.backbone) != AUDIO:
            raise SpecRejected(f"{spec.backbone} is not an audio backbone; dataset {dataset.id} holds audio")
        check_backbone(spec.backbone, spec.backbone_options, 1, 0, max_parameters)
        try:
            with torch.device("meta"):
                model = build_backbone(spec.backbone, in_channels=1, image_size=0, **spec.backbone_options)
        except (TypeError, ValueError) as exc:
            raise SpecRejected(f"cannot build the random-init backbone: {exc}") from exc
        check_size(f"random-init {spec.backbone}", parameter_count(model), max_parameters)
    return {**spec.model_dump(mode="json"), "dataset": dataset.id}


def check_embed_index(session: Session, project_id: str, spec: EmbedIndexSpec, dataset) -> dict:
    check_checkpoint(session, project_id, spec.checkpoint)
    check_audio_sources(session, project_id, dataset, [spec.checkpoint])
    if dataset.state != "ready":
        raise SpecRejected(f"dataset {dataset.id} cannot be indexed ({dataset.state})")
    return {**spec.model_dump(mode="json"), "dataset": dataset.id}
