"""Small real corpora for the text tests: WordNet glosses (Debian's wordnet-base), a few classes."""
from __future__ import annotations

import json

import pytest

CLASSES = ("noun.animal", "noun.plant", "noun.artifact", "verb.motion")


def glosses(per_class: int = 300, classes=CLASSES, split: str = "train") -> list[dict]:
    """The first `per_class` glosses of each class (file order) from the built-in split."""
    from core.data import DatasetUnavailable
    from core.data.wordnet import wordnet_glosses

    try:
        train, test = wordnet_glosses()
    except DatasetUnavailable as exc:
        pytest.skip(str(exc))
    data = train if split == "train" else test
    taken = {c: 0 for c in classes}
    records = []
    for text, label in zip(data.texts, data.labels):
        name = data.classes[label]
        if name in taken and taken[name] < per_class:
            taken[name] += 1
            records.append({"text": text, "label": name})
    return records


def jsonl(records: list[dict]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in records).encode()
