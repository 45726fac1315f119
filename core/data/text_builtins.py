"""Built-in text datasets: WordNet glosses from Debian's wordnet-base."""
from __future__ import annotations

from core.data.errors import DatasetUnavailable
from core.data.text import TextDataset
from core.data.wordnet import wordnet_glosses
from core.modalities import TEXT, builtin_names

NAMES = builtin_names(TEXT)


def load_text(name: str) -> tuple[TextDataset, TextDataset]:
    """(train, test) of a built-in text set."""
    if name == "wordnet-glosses":
        return wordnet_glosses()
    raise DatasetUnavailable(f"unknown built-in text dataset {name!r}; choose one of {', '.join(NAMES)}")
