"""An embed-index job: embed every item of a dataset split with a checkpoint's backbone (through
the feature cache, with the dataset's modality's features: workers/modalities.py) and store the
L2-normalised vectors with their item ids for /v1/neighbors."""
from __future__ import annotations

import time

import torch
import torch.nn.functional as F

from core.checkpoint import save_tree
from core.index import build_hnsw
from core.modalities import of_stats
from jobs import lifecycle
from jobs.specs import EmbedIndexSpec
from jobs.tables import Dataset
from workers.context import JobContext, pick_device
from workers.modalities import INDEX_FEATURES


def index_key(job_id: str) -> str:
    return f"indexes/{job_id}.safetensors"


def run_embed_index(ctx: JobContext, raw_spec: dict):
    spec = EmbedIndexSpec.model_validate(raw_spec)
    device = pick_device(spec.device if spec.device != "auto" else ctx.settings.device)
    dataset_row = ctx.write(lambda s: s.get(Dataset, spec.dataset))
    started = time.perf_counter()
    ctx.log_metrics(0, {}, 2)
    embedded = INDEX_FEATURES[of_stats(dataset_row.stats)](ctx, spec, dataset_row, device)
    if embedded is None:
        return _stopped(ctx, ctx.stop_reason())
    data, features = embedded
    ctx.log_metrics(1, {}, 2)
    vectors = F.normalize(features.float(), dim=1).to(getattr(torch, spec.dtype)).contiguous()
    key = index_key(ctx.job_id)
    manifest = {"format": "darkmatter-index/1", "checkpoint": spec.checkpoint, "dataset": dataset_row.id,
                "split": spec.split, "dtype": spec.dtype, "metric": "cosine", "search": spec.search}
    tree = {"vectors": vectors, "items": torch.arange(len(data)), "labels": data.labels.contiguous()}
    if spec.search == "hnsw":
        tree["hnsw"] = build_hnsw(features)
    sha, size = save_tree(ctx.store.staging_path(key), tree, manifest)
    ctx.store.commit(key)
    ctx.log_metrics(2, {}, 2)
    ctx.add_compute(time.perf_counter() - started)
    return lifecycle.SUCCEEDED, {**manifest, "key": key, "sha256": sha, "bytes": size, "n_items": len(data),
                                 "dimensions": int(vectors.shape[1])}, None


def _stopped(ctx: JobContext, reason: str):
    ctx.add_compute(0.0)
    return (lifecycle.CANCELLED, {}, None) if reason == "cancelled" else (None, None, None)
