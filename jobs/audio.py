"""The service's audio datasets: built-ins described once per process, scanned folders and archives
of WAV/FLAC loaded from their prepared int16 arrays."""
from __future__ import annotations

import copy
import hashlib
import threading
from functools import lru_cache

import numpy as np
import torch
from sqlalchemy.orm import Session

from core.data.audio import AudioDataset
from core.data.audio_builtins import load_audio
from core.data.errors import DatasetUnavailable
from core.modalities import AUDIO
from jobs.builtins import register_builtin
from jobs.storage import ArtifactStore
from jobs.tables import Dataset

AUDIO_BASELINES = ("mfcc", "random-init")


def describe(train: AudioDataset, test: AudioDataset, split: str) -> dict:
    lengths = torch.cat([train.lengths, test.lengths]).double() / train.sample_rate
    labelled = bool((train.labels >= 0).any())
    digest = hashlib.sha256((train.content_hash() + test.content_hash()).encode()).hexdigest()
    return {"n_items": len(train), "n_test": len(test), "n_classes": len(train.classes), "content_hash": digest,
            "stats": {"modality": AUDIO, "sample_rate": train.sample_rate, "labelled": labelled,
                      "classes": list(train.classes), "split": split,
                      "seconds": {"min": float(lengths.min()), "median": float(lengths.median()),
                                  "max": float(lengths.max()), "total": float(lengths.sum())}}}


BUILTIN_LOCK = threading.Lock()
SPLITS = {"spoken-words": "fixed by voice (core.data.spoken_words.TEST_VOICES held out)",
          "spoken-voices": "fixed by word (every 5th of core.data.spoken_words.WORDS held out)"}


@lru_cache(maxsize=None)  # keyed by a built-in's name (a short fixed list, checked by the caller)
def _described_audio(name: str) -> dict:
    train, test = load_audio(name)
    return describe(train, test, SPLITS.get(name, "fixed"))


def builtin_audio_description(name: str) -> dict:
    """The row fields of a built-in audio dataset, made (synthesised the first time) and described
    once per process."""
    with BUILTIN_LOCK:
        return copy.deepcopy(_described_audio(name))


def register_builtin_audio(session: Session, project_id: str, name: str) -> Dataset:
    """Register (or return the already registered) built-in audio dataset `name`."""
    return register_builtin(session, project_id, name, builtin_audio_description)


def load_splits(store: ArtifactStore | None, dataset: Dataset) -> tuple[AudioDataset, AudioDataset]:
    """(train, test) clips of a ready audio dataset: a built-in by name, else its prepared arrays."""
    if dataset.uri.startswith("builtin://"):
        return load_audio(dataset.uri.removeprefix("builtin://"))
    stats = dataset.stats or {}
    if stats.get("modality") != AUDIO or "prepared" not in stats:
        raise DatasetUnavailable(f"dataset {dataset.id} is not a scanned audio dataset")
    if store is None:
        raise DatasetUnavailable("an artifact store is needed to load a scanned dataset")
    classes, rate = list(stats.get("classes") or []), stats.get("sample_rate", 16_000)
    with np.load(store.local_path(stats["prepared"]), allow_pickle=False) as arrays:
        return tuple(AudioDataset(torch.from_numpy(arrays[f"{p}samples"]), torch.from_numpy(arrays[f"{p}offsets"]),
                                  torch.from_numpy(arrays[f"{p}labels"]), classes, rate) for p in ("", "test_"))
