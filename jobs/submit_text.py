"""The submit checks of a job on a text dataset: a text method and backbone, a tokenizer that fits
the corpus, text checkpoints and the text baselines (tfidf, random-init)."""
from __future__ import annotations

import torch
from sqlalchemy.orm import Session

from core.backbones import build_backbone
from core.backbones.text import TEXT_BACKBONES
from core.methods import method_info
from core.modalities import TEXT, of_manifest
from jobs import text
from jobs.checks import SpecRejected, built_size, check_backbone, check_checkpoint, check_estimate, check_size
from jobs.specs import BASELINES, EmbedIndexSpec, EvaluateSpec, PretrainSpec


def check_pretrain(session: Session, project_id: str, spec: PretrainSpec, dataset,
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
        if source in ("raw-pixels", "mfcc"):
            raise SpecRejected(f"dataset {dataset.id} is text: use the baselines tfidf or random-init")
        if source not in BASELINES:
            modality = of_manifest(check_checkpoint(session, project_id, source).manifest)
            if modality != TEXT:
                raise SpecRejected(f"checkpoint {source} embeds {modality}s; dataset {dataset.id} is text")


def check_evaluate(session: Session, project_id: str, spec: EvaluateSpec, dataset,
                   max_parameters: int | None = None) -> dict:
    if not (dataset.stats or {}).get("labelled"):
        raise SpecRejected(f"dataset {dataset.id} has no labels to evaluate against")
    check_text_sources(session, project_id, dataset, spec.sources(), spec.backbone, spec.backbone_options,
                       max_parameters)
    return {**spec.model_dump(mode="json"), "dataset": dataset.id}


def check_embed_index(session: Session, project_id: str, spec: EmbedIndexSpec, dataset) -> dict:
    check_checkpoint(session, project_id, spec.checkpoint)
    check_text_sources(session, project_id, dataset, [spec.checkpoint])
    return {**spec.model_dump(mode="json"), "dataset": dataset.id}
