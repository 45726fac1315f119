"""Evaluation inside the child: features of each checkpoint or baseline (from the feature cache
when an earlier evaluation computed them), then each protocol; every result is written as
`scores` rows carrying the checkpoint's pretraining compute seconds."""
from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import dataclass, field

import torch
from torch import nn

from core.backbones import build_backbone
from core.data.transforms import resize
from core.evaluate.features import extract_features, raw_pixels
from core.evaluate.finetune import finetune
from core.evaluate.protocols import ENCODER_PROTOCOLS, run_protocol
from jobs import checkpoints, datasets, lifecycle, scores
from jobs.features import feature_key, load_or_compute
from jobs.specs import EvaluateSpec
from jobs.tables import Checkpoint, Dataset, Job
from workers.context import JobContext, pick_device


@dataclass
class Source:
    """What produces the features: a checkpoint's backbone, a random-init backbone, or raw pixels."""
    name: str  # cache key part
    encoder: nn.Module | None  # None: raw pixels
    mean: list[float] = field(default_factory=list)
    std: list[float] = field(default_factory=list)
    size: int | None = None  # input side the encoder expects
    who: dict = field(default_factory=dict)  # checkpoint_id / baseline / method / backbone / compute_seconds


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
    row = ctx.write(lambda s: s.get(Checkpoint, ref))
    if row is None:
        raise LookupError(f"checkpoint {ref!r} not found")
    state, manifest = checkpoints.load_part(ctx.store, row, "backbone")
    config = dict(manifest["backbone"])
    encoder = build_backbone(config.pop("name"), **config)
    encoder.load_state_dict(state)
    norm = manifest["normalization"]
    pretrain = ctx.write(lambda s: s.get(Job, row.job_id).compute_seconds)
    return Source(row.id, encoder, norm["mean"], norm["std"], manifest["input_size"][-1],
                  {"checkpoint_id": row.id, "method": row.method, "backbone": row.backbone,
                   "compute_seconds": pretrain})


def source_features(ctx: JobContext, source: Source, dataset_row: Dataset, split: str, data, device):
    """Features of every item of one split (cached in the artifact store for encoders)."""
    if source.encoder is None:
        return raw_pixels(data.images)
    images = resize(data, source.size).images if source.size else data.images
    key = feature_key(source.name, dataset_row.id, dataset_row.content_hash, split)
    features, cached = load_or_compute(
        ctx.store, key, lambda: extract_features(source.encoder, images, source.mean, source.std, device=device),
        data.labels)
    ctx.event("log", f"features of {source.name} on {dataset_row.id}/{split}: "
              + ("loaded from the feature cache" if cached else "computed and cached"),
              features=key, cache="hit" if cached else "miss")
    return features


class Progress:
    def __init__(self, ctx: JobContext, total: int):
        self.ctx, self.total, self.done = ctx, total, 0

    def advance(self) -> None:
        self.done += 1
        self.ctx.log_metrics(self.done, {}, self.total)


def evaluate_source(ctx: JobContext, source: Source, dataset_row: Dataset, train_set, test_set, protocols: list[dict],
                    seed: int, device, progress: Progress | None = None,
                    featurize=source_features) -> tuple[dict, str | None]:
    """({protocol: {metric: value}}, stop reason or None) for one source; each result is recorded.
    `featurize(ctx, source, dataset_row, split, data, device)`: the features of a split (images
    by default; workers/text_eval.py gives text's)."""
    results: dict = {}
    train_x = featurize(ctx, source, dataset_row, "train", train_set, device)
    test_x = featurize(ctx, source, dataset_row, "test", test_set, device)
    keep_train, keep_test = train_set.labels >= 0, test_set.labels >= 0
    train_x, train_y = train_x[keep_train], train_set.labels[keep_train]
    test_x, test_y = test_x[keep_test], test_set.labels[keep_test]
    for item in protocols:
        reason = ctx.stop_reason()
        if reason:
            return results, reason
        name, options = item["protocol"], item.get("options", {})
        if name in ENCODER_PROTOCOLS:
            if source.encoder is None:
                ctx.event("log", f"{name} skipped for {source.name}: it needs an encoder")
                if progress:
                    progress.advance()
                continue
            train_l, test_l = labelled(train_set), labelled(test_set)
            if source.size:
                train_l, test_l = resize(train_l, source.size), resize(test_l, source.size)
            values = finetune(source.encoder, train_l.images, train_l.labels, test_l.images, test_l.labels,
                              source.mean, source.std, seed=seed, device=device,
                              should_stop=lambda step: ctx.stop_reason() is not None, **options)
        else:
            values = run_protocol(name, train_x, train_y, test_x, test_y, seed=seed, **options)
        # float32 results to the digits they hold: 0.65, not 0.6499999761581421
        values = {k: float(f"{v:.7g}") for k, v in values.items()}
        bad = sorted(k for k, v in values.items() if not math.isfinite(v))
        if bad:
            ctx.event("log", f"{name} on {source.name}: non-finite {', '.join(bad)} not recorded")
            values = {k: v for k, v in values.items() if k not in bad}
        results[name] = values

        def write(session, name=name, options=options, values=values):
            job = session.get(Job, ctx.job_id)
            scores.record(session, project_id=job.project_id, dataset_id=dataset_row.id, protocol=name,
                          values=values, eval_job_id=ctx.job_id, options={**options, "seed": seed}, **source.who)

        ctx.write(write)
        if progress:
            progress.advance()
    return results, None


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


def run_evaluate(ctx: JobContext, raw_spec: dict):
    spec = EvaluateSpec.model_validate(raw_spec)
    device = pick_device(spec.device if spec.device != "auto" else ctx.settings.device)
    dataset_row = ctx.write(lambda s: s.get(Dataset, spec.dataset))
    if (dataset_row.stats or {}).get("modality") == "text":
        from workers.text_eval import run_evaluate_text

        return run_evaluate_text(ctx, spec, dataset_row)
    train_set, test_set = datasets.load(dataset_row, ctx.store)
    protocols = [p.model_dump() for p in spec.protocols]
    refs = spec.sources()
    baseline_backbone = (spec.backbone, spec.backbone_options)
    if spec.backbone is None and "random-init" in refs:
        baseline_backbone = checkpoint_backbone(ctx, refs)
    progress = Progress(ctx, len(refs) * len(protocols))
    ctx.log_metrics(0, {}, progress.total)
    started = time.perf_counter()
    results: dict = {}
    reason = None
    try:
        for ref in refs:
            reason = ctx.stop_reason()
            if reason:
                break
            source = open_source(ctx, ref, dataset_row, spec.seed, *baseline_backbone)
            results[ref], reason = evaluate_source(ctx, source, dataset_row, train_set, test_set, protocols,
                                                   spec.seed, device, progress)
            if reason:
                break
    finally:
        ctx.add_compute(time.perf_counter() - started)
    if reason in ("shutdown", "lease-lost"):
        return None, None, None
    if reason == "cancelled":
        return lifecycle.CANCELLED, {"scores": results}, None
    return lifecycle.SUCCEEDED, {"scores": results}, None
