"""Text datasets: .txt (one document per line) and .jsonl ({"text": ..., "label": optional}).

Validated, described and split here; tokenised for training in core/data/text_batches.py."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from core.data.errors import DatasetUnavailable
from core.modalities import TEXT

TEXT_FORMATS = ("txt", "jsonl")


@dataclass
class TextDataset:
    texts: list[str]
    labels: list[int]  # -1 where unlabelled
    classes: list[str]

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, indices) -> "TextDataset":
        return TextDataset([self.texts[i] for i in indices], [self.labels[i] for i in indices], self.classes)


def read_text(path: str | Path, fmt: str, max_doc_chars: int = 1_000_000) -> TextDataset:
    texts, raw_labels = [], []
    try:
        with open(path, encoding="utf-8") as f:
            for number, line in enumerate(f, 1):
                line = line.rstrip("\n").rstrip("\r")
                if not line.strip():
                    continue
                if fmt == "txt":
                    text, label = line, None
                else:
                    try:
                        record = json.loads(line)
                    except json.JSONDecodeError as exc:
                        raise DatasetUnavailable(f"line {number} is not JSON: {exc.msg}") from exc
                    if not isinstance(record, dict) or not isinstance(record.get("text"), str):
                        raise DatasetUnavailable(f"line {number} needs a string field 'text'")
                    text, label = record["text"], record.get("label")
                    if not text.strip():
                        raise DatasetUnavailable(f"line {number}: 'text' is empty")
                    if label is not None and (not isinstance(label, (str, int)) or isinstance(label, bool)):
                        raise DatasetUnavailable(f"line {number}: 'label' must be a string or an integer")
                if len(text) > max_doc_chars:
                    raise DatasetUnavailable(f"line {number} has {len(text)} characters (limit {max_doc_chars})")
                texts.append(text)
                raw_labels.append(None if label is None else str(label))
    except UnicodeDecodeError as exc:
        raise DatasetUnavailable(f"text is not UTF-8 (byte {exc.start})") from exc
    if not texts:
        raise DatasetUnavailable("no documents (the file is empty)")
    classes = sorted({c for c in raw_labels if c is not None})
    index = {c: i for i, c in enumerate(classes)}
    return TextDataset(texts, [index[c] if c is not None else -1 for c in raw_labels], classes)


def describe_text(data: TextDataset, test_fraction: float, seed: int) -> dict:
    """Counts, lengths and vocabulary capacity; the test split is a seeded fraction of the documents."""
    train, test = split_text(data, test_fraction, seed)
    return describe_splits(train, test, f"seeded fraction {test_fraction} (seed {seed})")


def describe_splits(train: TextDataset, test: TextDataset, split: str) -> dict:
    """What a text dataset row records. `vocab_capacity`: the largest vocabulary each tokenizer
    kind can learn from the training split, so that a spec asking for more is refused at once."""
    from core.text.tokenizer import KINDS, vocab_capacity
    from core.text.words import count_words, words_at_least

    texts = train.texts + test.texts
    lengths = [len(t) for t in texts]
    labels = train.labels + test.labels
    return {"modality": TEXT, "n_items": len(train), "n_test": len(test), "n_classes": len(train.classes),
            "classes": train.classes, "labelled": any(label >= 0 for label in labels),
            "chars": {"mean": sum(lengths) / len(texts), "max": max(lengths), "min": min(lengths)},
            "words_mean": sum(len(t.split()) for t in texts) / len(texts),
            "vocab_capacity": {kind: vocab_capacity(train.texts, kind) for kind in KINDS},
            # word vectors: how many distinct words the training split has seen at least 1, 2, .. 20 times
            "words_at_least": words_at_least(count_words(train.texts)),
            "split": split}


def content_hash(train: TextDataset, test: TextDataset) -> str:
    import hashlib
    import json

    digest = hashlib.sha256()
    for part in (train, test):
        digest.update(json.dumps([part.texts, part.labels, part.classes]).encode())
    return digest.hexdigest()


def test_size(n: int, test_fraction: float) -> int:
    return max(1, int(round(n * test_fraction))) if n >= 2 else 0


def split_text(data: TextDataset, test_fraction: float, seed: int) -> tuple[TextDataset, TextDataset]:
    """(train, test): a seeded permutation's first test_size documents are the test split."""
    import torch

    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed)).tolist()
    n_test = test_size(len(data), test_fraction)
    return data.subset(sorted(order[n_test:])), data.subset(sorted(order[:n_test]))
