"""The service's image datasets: built-ins described once per process, scanned datasets loaded
from their prepared arrays (or one item of them), WebDataset shards streamed."""
from __future__ import annotations

import copy
import threading
from functools import lru_cache

import numpy as np
from sqlalchemy.orm import Session

from core.data import ArrayDataset, DatasetUnavailable, load_source, split_by_fraction
from core.data.canvas import center_cropped
from core.data.files import load_npz, npz_item
from core.data.webdataset import WebDatasetStream, head_sample
from core.modalities import IMAGE
from jobs.builtins import register_builtin
from jobs.settings import Settings
from jobs.sources import guarded_opener, limits, project_sources
from jobs.storage import ArtifactStore
from jobs.tables import Dataset


def describe(train: ArrayDataset, test: ArrayDataset) -> dict:
    mean, std = train.channel_stats()
    return {"n_items": len(train), "n_test": len(test), "n_classes": max(train.num_classes, test.num_classes),
            "content_hash": train.content_hash(),
            "stats": {"mean": mean, "std": std, "channels": train.channels, "image_size": train.image_size,
                      "labelled": bool((train.labels >= 0).any()), "modality": IMAGE}}


BUILTIN_LOCK = threading.Lock()


@lru_cache(maxsize=None)
def _described_builtin(name: str) -> dict:
    train, test = load_source(f"builtin://{name}")
    return describe(train, test)


def builtin_description(name: str) -> dict:
    """The row fields of a built-in image dataset, loaded and described once per process: the
    first jobs submitted on it (often many at once) wait for one load instead of each loading it."""
    with BUILTIN_LOCK:
        return copy.deepcopy(_described_builtin(name))


def register_builtin_image(session: Session, project_id: str, name: str) -> Dataset:
    """Register (or return the already registered) built-in image dataset `name`."""
    return register_builtin(session, project_id, name, builtin_description)


def is_streamed(dataset: Dataset) -> bool:
    return dataset.format == "webdataset"


def load(dataset: Dataset, store: ArtifactStore | None = None,
         keep_canvas: bool = False) -> tuple[ArrayDataset, ArrayDataset]:
    """(train, test) uint8 arrays at the dataset's scanned size. Images stored keeping their
    aspect come as centre crops at the training side (what evaluation and embeddings read),
    or with `keep_canvas` as stored, with their sizes (what training crops from)."""
    train, test = _load(dataset, store)
    if train.sizes is not None and not keep_canvas:
        side = dataset.stats["image_size"]
        return center_cropped(train, side), center_cropped(test, side)
    return train, test


def _load(dataset: Dataset, store: ArtifactStore | None = None) -> tuple[ArrayDataset, ArrayDataset]:
    if dataset.format == "builtin" or "prepared" not in (dataset.stats or {}):
        if dataset.format in ("txt", "jsonl"):
            raise DatasetUnavailable("a text dataset has no images (jobs.text.load_splits reads its documents)")
        if dataset.format == "webdataset":
            raise DatasetUnavailable("webdataset shards are streamed, not loaded (use stream())")
        return load_source(dataset.uri)
    if store is None:
        raise DatasetUnavailable("an artifact store is needed to load an uploaded or scanned dataset")
    return load_npz(str(store.local_path(dataset.stats["prepared"])))


def load_sizes(dataset: Dataset, store: ArtifactStore) -> "torch.Tensor | None":
    """The training items' (h, w) on their canvas (images stored keeping their aspect), read
    without the pixels; None for square images."""
    import torch

    if not (dataset.stats or {}).get("stored_short_side"):
        return None
    with np.load(store.local_path(dataset.stats["prepared"]), allow_pickle=False) as arrays:
        return torch.from_numpy(arrays["s"].astype(np.int64))


def read_item(dataset: Dataset, store: ArtifactStore, split: str, index: int) -> tuple[np.ndarray | None, int]:
    """((C, H, W) uint8 or None when out of range, items in the split) of a scanned dataset, read
    from its prepared arrays without loading them."""
    path = store.local_path(dataset.stats["prepared"])
    item, count = npz_item(path, "x" if split == "train" else "x_test", index)
    if item is not None and (dataset.stats or {}).get("stored_short_side"):  # its valid region, not the canvas
        h, w = npz_item(path, "s" if split == "train" else "s_test", index)[0]
        item = item[:, :h, :w]
    return item, count


def stream(settings: Settings, dataset: Dataset) -> WebDatasetStream:
    stats = dataset.stats
    return WebDatasetStream(stats["shards"], stats["image_size"], stats["channels"],
                            opener=guarded_opener(settings, project_sources(settings, dataset.project_id)), shuffle_buffer=settings.shuffle_buffer,
                            max_pixels=limits(settings).max_pixels, shard_items=stats.get("shard_items"))


def stream_eval_split(settings: Settings, dataset: Dataset, image_size: int) -> tuple[ArrayDataset, ArrayDataset]:
    """For auto-eval of a streamed dataset: its first stream_eval_items samples (shard order),
    split by the dataset's test_fraction and seed."""
    source = stream(settings, dataset)
    source.image_size = image_size
    sample = head_sample(source, settings.stream_eval_items)
    options = dataset.stats.get("options", {})
    return split_by_fraction(sample, options.get("test_fraction", 0.2), options.get("seed", 0))
