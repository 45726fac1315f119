"""Evaluation of image encoders inside the child: features of each checkpoint or baseline (from
the feature cache when an earlier evaluation computed them), then each protocol through
workers/eval_common.py's one loop; fine-tuning for the encoder protocols."""
from __future__ import annotations

import hashlib
import json

import torch

from core.backbones import build_backbone
from core.data.transforms import resize
from core.evaluate.features import extract_features, raw_pixels
from core.evaluate.finetune import finetune
from jobs import images
from jobs.specs import EmbedIndexSpec, EvaluateSpec
from jobs.tables import Checkpoint, Dataset
from workers.context import JobContext
from workers.eval_common import (Progress, Source, cached_features, checkpoint_encoder, evaluate_sources,
                                 run_protocols)


def labelled(data):
    keep = data.labels >= 0
    return data.subset(keep.nonzero().squeeze(1)) if not bool(keep.all()) else data


def checkpoint_backbone(ctx: JobContext, refs: list[str]) -> tuple[str | None, dict | None]:
    """The random-init baseline's architecture when the spec names none: the first evaluated
    checkpoint's own (name and options), so the baseline is the same network untrained."""
    for ref in refs:
        row = ctx.write(lambda s, ref=ref: s.get(Checkpoint, ref))
        if row is not None:
            config = dict((row.manifest or {}).get("backbone") or {})
            name = config.pop("name", row.backbone)
            for given_by_the_dataset in ("in_channels", "image_size"):
                config.pop(given_by_the_dataset, None)
            ctx.event("log", f"random-init baseline on the checkpoint's backbone {name}")
            return name, config
    return None, None


def open_source(ctx: JobContext, ref: str, dataset_row: Dataset, seed: int, backbone: str | None,
                backbone_options: dict | None = None) -> Source:
    stats = dataset_row.stats or {}
    if ref == "raw-pixels":
        return Source("raw-pixels", None, who={"baseline": ref, "method": ref})
    if ref == "random-init":
        torch.manual_seed(seed)
        name = backbone or "resnet18"
        size = stats["image_size"]
        options = dict(backbone_options or {})
        encoder = build_backbone(name, in_channels=stats["channels"], image_size=size, **options)
        tag = hashlib.sha256(json.dumps(options, sort_keys=True).encode()).hexdigest()[:8] if options else ""
        return Source(f"random-init-{name}{'-' + tag if tag else ''}-s{seed}-{size}", encoder, stats["mean"],
                      stats["std"], size, {"baseline": ref, "method": ref, "backbone": name})
    row, encoder, manifest, who = checkpoint_encoder(ctx, ref)
    norm = manifest["normalization"]
    return Source(row.id, encoder, norm["mean"], norm["std"], manifest["input_size"][-1], who)


def source_features(ctx: JobContext, source: Source, dataset_row: Dataset, split: str, data, device):
    """Features of every item of one split (cached in the artifact store for encoders)."""
    if source.encoder is None:
        return raw_pixels(data.images)
    images = resize(data, source.size).images if source.size else data.images
    return cached_features(ctx, source, dataset_row, split,
                           lambda: extract_features(source.encoder, images, source.mean, source.std, device=device),
                           data.labels)


def fine_tune_images(source: Source, train_set, test_set, seed: int, device, should_stop, options: dict) -> dict:
    """The encoder protocols (fine-tuning) on the labelled images, at the encoder's input size."""
    train_l, test_l = labelled(train_set), labelled(test_set)
    if source.size:
        train_l, test_l = resize(train_l, source.size), resize(test_l, source.size)
    return finetune(source.encoder, train_l.images, train_l.labels, test_l.images, test_l.labels,
                    source.mean, source.std, seed=seed, device=device, should_stop=should_stop, **options)


def evaluate_source(ctx: JobContext, source: Source, dataset_row: Dataset, train_set, test_set, protocols: list[dict],
                    seed: int, device, progress: Progress | None = None) -> tuple[dict, str | None]:
    """({protocol: {metric: value}}, stop reason or None) for one source on images; each result is recorded."""
    return run_protocols(ctx, source, dataset_row, train_set, test_set, protocols, seed, device, progress,
                         featurize=source_features, fine_tune=fine_tune_images)


def evaluate_encoder(ctx: JobContext, encoder, train_set, test_set, mean, std, protocols, seed, device, *,
                     dataset_id: str, checkpoint_id=None, baseline=None, method=None, backbone=None,
                     compute_seconds: float = 0.0) -> dict:
    """The pretrain job's auto-evaluation of its final encoder (its features are cached under the
    checkpoint id, so a later evaluate job of that checkpoint does not run the backbone again)."""
    dataset_row = ctx.write(lambda s: s.get(Dataset, dataset_id))
    who = {"checkpoint_id": checkpoint_id, "baseline": baseline, "method": method, "backbone": backbone,
           "compute_seconds": compute_seconds}
    source = Source(checkpoint_id or f"job-{ctx.job_id}", encoder, mean, std, None, who)
    results, _ = evaluate_source(ctx, source, dataset_row, train_set, test_set, protocols, seed, device)
    return results


def run_evaluate_image(ctx: JobContext, spec: EvaluateSpec, dataset_row: Dataset, device):
    train_set, test_set = images.load(dataset_row, ctx.store)
    protocols = [p.model_dump() for p in spec.protocols]
    refs = spec.sources()
    baseline_backbone = (spec.backbone, spec.backbone_options)
    if spec.backbone is None and "random-init" in refs:
        baseline_backbone = checkpoint_backbone(ctx, refs)

    def evaluate_ref(ref: str, progress: Progress):
        source = open_source(ctx, ref, dataset_row, spec.seed, *baseline_backbone)
        return evaluate_source(ctx, source, dataset_row, train_set, test_set, protocols, spec.seed, device, progress)

    return evaluate_sources(ctx, refs, protocols, evaluate_ref)


def index_features_image(ctx: JobContext, spec: EmbedIndexSpec, dataset_row: Dataset, device):
    """(the split's images, their features) for an embed-index job, or None when the job was
    stopped before its features were computed."""
    train_set, test_set = images.load(dataset_row, ctx.store)
    data = train_set if spec.split == "train" else test_set
    source = open_source(ctx, spec.checkpoint, dataset_row, 0, None)
    if ctx.stop_reason():
        return None
    return data, source_features(ctx, source, dataset_row, spec.split, data, device)
