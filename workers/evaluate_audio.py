"""Evaluation of audio encoders inside the child: an audio checkpoint, a random-init encoder or the
MFCC baseline turns each split's clips into features (an encoder's frames mean-pooled over each
clip), and the feature protocols (kNN, linear, few-shot, clustering, health) run on them through
workers/eval_common.py's one loop."""
from __future__ import annotations

import hashlib
import json

import torch

from core.backbones import build_backbone
from core.data.audio import AudioDataset
from core.evaluate.audio import audio_features, mfcc_features
from core.modalities import AUDIO
from jobs import audio
from jobs.specs import EmbedIndexSpec, EvaluateSpec
from jobs.tables import Checkpoint, Dataset
from workers.context import JobContext
from workers.eval_common import (Progress, Source, cached_features, checkpoint_encoder, evaluate_sources,
                                 feature_protocols, run_protocols)

RANDOM_INIT_BACKBONE = "wav2vec2_small"


def checkpoint_backbone(ctx: JobContext, refs: list[str]) -> tuple[str | None, dict | None]:
    """The random-init baseline's architecture when the spec names none: the first evaluated
    checkpoint's own, so the baseline is the same network untrained."""
    for ref in refs:
        row = ctx.write(lambda s, ref=ref: s.get(Checkpoint, ref))
        if row is not None:
            config = dict((row.manifest or {}).get("backbone") or {})
            name = config.pop("name", row.backbone)
            for unused in ("in_channels", "image_size"):
                config.pop(unused, None)
            ctx.event("log", f"random-init baseline on the checkpoint's backbone {name}")
            return name, config
    return None, None


def open_audio_source(ctx: JobContext, ref: str, dataset_row: Dataset, seed: int, backbone: str | None = None,
                      backbone_options: dict | None = None) -> Source:
    if ref == "mfcc":
        return Source("mfcc", None, who={"baseline": ref, "method": ref})
    if ref == "random-init":
        name, options = backbone or RANDOM_INIT_BACKBONE, dict(backbone_options or {})
        torch.manual_seed(seed)
        encoder = build_backbone(name, in_channels=1, image_size=0, **options)
        tag = hashlib.sha256(json.dumps(options, sort_keys=True).encode()).hexdigest()[:8] if options else ""
        return Source(f"random-init-{name}{'-' + tag if tag else ''}-s{seed}", encoder,
                      who={"baseline": ref, "method": ref, "backbone": name})
    if ref in ("raw-pixels", "tfidf"):
        raise ValueError(f"{ref} is not an audio baseline; audio datasets have mfcc and random-init")
    row, encoder, _, who = checkpoint_encoder(
        ctx, ref, AUDIO, f"checkpoint {ref} is a {{got}} model; dataset {dataset_row.id} holds audio")
    return Source(row.id, encoder, who=who)


def audio_split_features(ctx: JobContext, source: Source, dataset_row: Dataset, split: str, data: AudioDataset,
                         device):
    """Features of one split's clips (cached in the artifact store, the MFCC baseline's too)."""
    if source.encoder is None:
        compute = lambda: mfcc_features(data)  # noqa: E731
    else:
        compute = lambda: audio_features(source.encoder, data, device=device)  # noqa: E731
    return cached_features(ctx, source, dataset_row, split, compute, data.labels)


def evaluate_audio_encoder(ctx: JobContext, encoder, train: AudioDataset, test: AudioDataset, protocols: list[dict],
                           seed: int, device, *, dataset_id: str, checkpoint_id: str | None, method: str,
                           backbone: str, compute_seconds: float) -> dict:
    """An audio pretrain job's auto-evaluation of its final encoder."""
    dataset_row = ctx.write(lambda s: s.get(Dataset, dataset_id))
    who = {"checkpoint_id": checkpoint_id, "method": method, "backbone": backbone, "compute_seconds": compute_seconds}
    source = Source(checkpoint_id or f"job-{ctx.job_id}", encoder, who=who)
    results, _ = run_protocols(ctx, source, dataset_row, train, test, feature_protocols(ctx, protocols), seed, device,
                               None, featurize=audio_split_features)
    return results


def run_evaluate_audio(ctx: JobContext, spec: EvaluateSpec, dataset_row: Dataset, device):
    train, test = audio.load_splits(ctx.store, dataset_row)
    protocols = feature_protocols(ctx, [p.model_dump() for p in spec.protocols])
    refs = spec.sources()
    baseline_backbone = (spec.backbone, spec.backbone_options)
    if spec.backbone is None and "random-init" in refs:
        baseline_backbone = checkpoint_backbone(ctx, refs)

    def evaluate_ref(ref: str, progress: Progress):
        source = open_audio_source(ctx, ref, dataset_row, spec.seed, *baseline_backbone)
        return run_protocols(ctx, source, dataset_row, train, test, protocols, spec.seed, device, progress,
                             featurize=audio_split_features)

    return evaluate_sources(ctx, refs, protocols, evaluate_ref)


def audio_index_features(ctx: JobContext, spec: EmbedIndexSpec, dataset_row: Dataset, device):
    """(the split's clips, their features) for an embed-index job on an audio dataset, or None once stopped."""
    train, test = audio.load_splits(ctx.store, dataset_row)
    data = train if spec.split == "train" else test
    source = open_audio_source(ctx, spec.checkpoint, dataset_row, 0)
    if ctx.stop_reason():
        return None
    return data, audio_split_features(ctx, source, dataset_row, spec.split, data, device)
