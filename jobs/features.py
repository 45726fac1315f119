"""The feature cache: features of one (checkpoint or baseline, dataset, split) are computed once,
stored in the artifact store as safetensors, and reused by later evaluations and indexes."""
from __future__ import annotations

import logging
from typing import Callable

import torch
from torch import Tensor

from core.checkpoint import CorruptCheckpoint, load_tree, save_tree
from jobs.storage import ArtifactStore

log = logging.getLogger(__name__)


def feature_key(source: str, dataset_id: str, content_hash: str | None, split: str) -> str:
    """source: a checkpoint id, 'raw-pixels', or e.g. 'random-init-resnet18-s0-32'."""
    return f"features/{source}/{dataset_id}-{(content_hash or 'nohash')[:16]}/{split}.safetensors"


def load_or_compute(store: ArtifactStore, key: str, compute: Callable[[], Tensor],
                    labels: Tensor) -> tuple[Tensor, bool]:
    """(features, cached): the stored features when present and intact, else compute() and store."""
    if store.exists(key):
        try:
            tree, _ = load_tree(store.local_path(key))
            if len(tree["features"]) == len(labels) and torch.equal(tree["labels"], labels):
                return tree["features"], True
            log.warning("cached features %s do not match the dataset; recomputing", key)
        except (CorruptCheckpoint, OSError, KeyError, ValueError) as exc:
            log.warning("cached features %s unreadable (%s); recomputing", key, exc)
    features = compute().float().contiguous()
    save_tree(store.staging_path(key), {"features": features, "labels": labels.contiguous()},
              {"format": "darkmatter-features/1", "key": key})
    store.commit(key)
    return features, False
