"""Text datasets: .txt (one document per line) and .jsonl ({"text": ..., "label": optional}).

They are validated and described here; training on text arrives with the text methods."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from core.data.arrays import DatasetUnavailable

TEXT_FORMATS = ("txt", "jsonl")


@dataclass
class TextDataset:
    texts: list[str]
    labels: list[int]  # -1 where unlabelled
    classes: list[str]


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
    """Counts and lengths; the test split is a seeded fraction of the documents."""
    n = len(data.texts)
    n_test = max(1, int(round(n * test_fraction))) if n >= 2 else 0
    lengths = [len(t) for t in data.texts]
    return {"modality": "text", "n_items": n - n_test, "n_test": n_test, "n_classes": len(data.classes),
            "classes": data.classes, "labelled": any(label >= 0 for label in data.labels),
            "chars": {"mean": sum(lengths) / n, "max": max(lengths), "min": min(lengths)},
            "words_mean": sum(len(t.split()) for t in data.texts) / n,
            "split": f"seeded fraction {test_fraction} (seed {seed})"}
