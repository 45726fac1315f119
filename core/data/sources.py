"""Datasets by source: a built-in of any modality by name (dispatched on core.modalities.BUILTINS),
an image dataset by URI."""
from __future__ import annotations

from core.data import audio_builtins, builtin, files, text_builtins
from core.data.arrays import ArrayDataset
from core.data.errors import DatasetUnavailable
from core.modalities import AUDIO, BUILTINS, IMAGE, TEXT

# modality -> name -> (train, test) of that modality's dataset type
BUILTIN_LOADERS = {IMAGE: builtin.load, TEXT: text_builtins.load_text, AUDIO: audio_builtins.load_audio}


def load_builtin(name: str) -> tuple:
    """(train, test) of a built-in dataset: ArrayDataset for images, TextDataset for text, AudioDataset
    for audio."""
    if name not in BUILTINS:
        raise DatasetUnavailable(f"unknown built-in dataset {name!r}; choose one of {', '.join(BUILTINS)}")
    return BUILTIN_LOADERS[BUILTINS[name]](name)


def load_source(uri: str) -> tuple[ArrayDataset, ArrayDataset]:
    """Resolve an image dataset URI (``builtin://digits``, ``npz:///path``, ...) to (train, test)."""
    scheme, _, rest = uri.partition("://")
    if scheme == "builtin":
        return builtin.load(rest)
    if scheme in files.LOADERS:
        return files.LOADERS[scheme](rest)
    raise DatasetUnavailable(f"unknown dataset source {uri!r}")
