"""What every evaluation shares, whatever the modality: the source of the features (a checkpoint's
encoder or a baseline), the loop over the spec's protocols that records each result as `scores`
rows carrying the checkpoint's pretraining compute seconds, and the loop over the spec's sources."""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable

from torch import nn

from core.evaluate.protocols import ENCODER_PROTOCOLS, run_protocol
from core.backbones import build_backbone
from core.modalities import of_manifest
from jobs import checkpoints, lifecycle, scores
from jobs.features import feature_key, load_or_compute
from jobs.tables import Checkpoint, Dataset, Job
from workers.context import JobContext


@dataclass
class Source:
    """What produces the features: a checkpoint's backbone, a random-init backbone, or a baseline
    without an encoder (raw pixels, TF-IDF)."""
    name: str  # cache key part
    encoder: nn.Module | None  # None: a baseline without an encoder
    mean: list[float] = field(default_factory=list)
    std: list[float] = field(default_factory=list)
    size: int | None = None  # input side the encoder expects
    who: dict = field(default_factory=dict)  # checkpoint_id / baseline / method / backbone / compute_seconds


class Progress:
    def __init__(self, ctx: JobContext, total: int):
        self.ctx, self.total, self.done = ctx, total, 0

    def advance(self) -> None:
        self.done += 1
        self.ctx.log_metrics(self.done, {}, self.total)


def run_protocols(ctx: JobContext, source: Source, dataset_row: Dataset, train_set, test_set, protocols: list[dict],
                  seed: int, device, progress: Progress | None, featurize: Callable,
                  fine_tune: Callable | None = None) -> tuple[dict, str | None]:
    """({protocol: {metric: value}}, stop reason or None) for one source; each result is recorded.
    `featurize(ctx, source, dataset_row, split, data, device)`: the features of a split;
    `fine_tune(source, train_set, test_set, seed, device, should_stop, options)`: the values of an
    encoder protocol (fine-tuning), for a modality that has one."""
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
            if source.encoder is None or fine_tune is None:
                ctx.event("log", f"{name} skipped for {source.name}: it needs an encoder")
                if progress:
                    progress.advance()
                continue
            values = fine_tune(source, train_set, test_set, seed, device,
                               lambda step: ctx.stop_reason() is not None, options)
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


def evaluate_sources(ctx: JobContext, refs: list[str], protocols: list[dict],
                     evaluate_ref: Callable[[str, Progress], tuple[dict, str | None]]):
    """An evaluate job's outcome: `evaluate_ref(ref, progress)` for each checkpoint or baseline in
    turn, until one is stopped (cancel, shutdown, lost lease); compute seconds are recorded."""
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
            results[ref], reason = evaluate_ref(ref, progress)
            if reason:
                break
    finally:
        ctx.add_compute(time.perf_counter() - started)
    if reason in ("shutdown", "lease-lost"):
        return None, None, None
    if reason == "cancelled":
        return lifecycle.CANCELLED, {"scores": results}, None
    return lifecycle.SUCCEEDED, {"scores": results}, None


def cached_features(ctx: JobContext, source: Source, dataset_row: Dataset, split: str, compute: Callable, labels):
    """compute() of one split's features, or the copy in the artifact store's feature cache; the
    job's events say which."""
    key = feature_key(source.name, dataset_row.id, dataset_row.content_hash, split)
    features, cached = load_or_compute(ctx.store, key, compute, labels)
    ctx.event("log", f"features of {source.name} on {dataset_row.id}/{split}: "
              + ("loaded from the feature cache" if cached else "computed and cached"),
              features=key, cache="hit" if cached else "miss")
    return features


def feature_protocols(ctx: JobContext, protocols: list[dict]) -> list[dict]:
    """The frozen-feature protocols of a modality without fine-tuning; the others are skipped with a log line."""
    skipped = [p["protocol"] for p in protocols if p["protocol"] in ENCODER_PROTOCOLS]
    if skipped:
        ctx.event("log", f"{', '.join(skipped)} skipped: fine-tuning is for image encoders")
    return [p for p in protocols if p["protocol"] not in ENCODER_PROTOCOLS]


def checkpoint_encoder(ctx: JobContext, ref: str, modality: str | None = None, refusal: str = ""):
    """(checkpoint row, its backbone's encoder with the trained weights, the manifest, who: the
    scores' provenance) of checkpoint `ref`; `modality` given, a checkpoint of another modality is
    refused with `refusal` (formatted with the checkpoint's modality as {got})."""
    row = ctx.write(lambda s: s.get(Checkpoint, ref))
    if row is None:
        raise LookupError(f"checkpoint {ref!r} not found")
    state, manifest = checkpoints.load_part(ctx.store, row, "backbone")
    if modality is not None and of_manifest(manifest) != modality:
        raise ValueError(refusal.format(got=of_manifest(manifest)))
    config = dict(manifest["backbone"])
    encoder = build_backbone(config.pop("name"), **config)
    encoder.load_state_dict(state)
    pretrain = ctx.write(lambda s: s.get(Job, row.job_id).compute_seconds)
    who = {"checkpoint_id": row.id, "method": row.method, "backbone": row.backbone, "compute_seconds": pretrain}
    return row, encoder, manifest, who
