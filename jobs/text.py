"""The service's text layer: the tokenizer part of a spec, text datasets (built-in, uploaded or by
path) loaded into their splits, and the checks a text pretrain job passes before it is queued."""
from __future__ import annotations

import copy
import threading
from functools import lru_cache
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from sqlalchemy.orm import Session

from core.backbones.text import TEXT_BACKBONES
from core.data import DatasetUnavailable
from core.data.text import TEXT_FORMATS, TextDataset, content_hash, describe_splits, read_text, split_text
from core.data.text_builtins import load_text
from core.modalities import TEXT, of_manifest
from jobs.builtins import register_builtin
from jobs.settings import Settings
from jobs.sources import local_source
from jobs.storage import ArtifactStore
from jobs.tables import Checkpoint, Dataset

TEXT_BASELINES = ("tfidf", "random-init")


class TokenizerSpec(BaseModel):
    """How a text job gets its tokenizer: trained on the job's corpus (the recipe's kind and
    vocabulary size unless given here), or reused from an earlier text checkpoint."""

    model_config = ConfigDict(extra="forbid")
    kind: Literal["bpe", "wordpiece"] | None = None
    vocab_size: int | None = Field(None, ge=6, le=250_000)
    lowercase: bool | None = None
    checkpoint: str | None = Field(None, description="reuse this text checkpoint's tokenizer")

    @model_validator(mode="after")
    def one_source(self) -> "TokenizerSpec":
        if self.checkpoint and (self.kind or self.vocab_size or self.lowercase is not None):
            raise ValueError("give tokenizer.checkpoint or the fields of a tokenizer to train, not both")
        return self

    def overrides(self) -> dict:
        return {k: v for k, v in self.model_dump().items() if v is not None and k != "checkpoint"}


TEXT_BUILTIN_LOCK = threading.Lock()


@lru_cache(maxsize=None)  # keyed by a built-in's name (a short fixed list, checked by the caller)
def _described_text(name: str) -> dict:
    train, test = load_text(name)
    stats = describe_splits(train, test, "fixed (the package's files, a seed-0 permutation, 10 % test)")
    return {"n_items": stats.pop("n_items"), "n_test": stats.pop("n_test"), "n_classes": stats.pop("n_classes"),
            "content_hash": content_hash(train, test), "stats": stats}


def builtin_text_description(name: str) -> dict:
    """The row fields of a built-in text dataset, described once per process (its tokenizer capacity
    takes ~13 CPU-s): a submit on it, refused or not, no longer pays that in an API thread each time
    (a refused one rolls the registration back, so every retry paid it again)."""
    with TEXT_BUILTIN_LOCK:
        return copy.deepcopy(_described_text(name))


def register_builtin_text(session: Session, project_id: str, name: str) -> Dataset:
    """Register (or return the already registered) built-in text dataset `name`."""
    return register_builtin(session, project_id, name, builtin_text_description)


def load_splits(settings: Settings, store: ArtifactStore, dataset: Dataset) -> tuple[TextDataset, TextDataset]:
    """(train, test) documents of a ready text dataset, split as its scan described."""
    if dataset.uri.startswith("builtin://"):
        return load_text(dataset.uri.removeprefix("builtin://"))
    if dataset.format not in TEXT_FORMATS:
        raise DatasetUnavailable(f"dataset {dataset.id} is not text ({dataset.format})")
    options = (dataset.stats or {}).get("options", {})
    data = read_text(local_source(settings, store, dataset), dataset.format)
    return split_text(data, options.get("test_fraction", 0.2), options.get("seed", 0))


def checkpoint_tokenizer(session: Session, project_id: str, checkpoint_id: str) -> dict:
    """The tokenizer facts of a text checkpoint of this project (for tokenizer.checkpoint)."""
    row = session.get(Checkpoint, checkpoint_id)
    if row is None or row.project_id != project_id:
        raise LookupError(f"tokenizer checkpoint {checkpoint_id!r} not found")
    if of_manifest(row.manifest) != TEXT:
        raise ValueError(f"checkpoint {checkpoint_id} is not a text model: it has no tokenizer")
    if row.manifest.get("tokenizer", {}).get("kind") == "words":
        raise ValueError(f"checkpoint {checkpoint_id} holds word vectors ({row.method}): it has no subword tokenizer")
    return {**row.manifest["tokenizer"], "checkpoint": checkpoint_id}


def check_text_spec(spec, dataset: Dataset, method_modality: str) -> None:
    """ValueError with the reason when a pretrain spec and its text dataset cannot make a job."""
    if method_modality != TEXT:
        raise ValueError(f"dataset {dataset.id} is text; {spec.method} is an image method "
                         "(text methods: see GET /v1/methods, modality text)")
    if spec.backbone and spec.backbone not in TEXT_BACKBONES:
        raise ValueError(f"{spec.backbone} is an image backbone; text methods take {', '.join(TEXT_BACKBONES)}")
    unused = [name for name, value in (("image_size", spec.image_size), ("augment", spec.augment),
                                       ("health_every", spec.health_every)) if value]
    if unused:
        raise ValueError(f"{', '.join(unused)}: not used by text methods")


def check_capacity(recipe: dict, dataset: Dataset) -> None:
    """The resolved tokenizer (the recipe's default size included) fits the corpus."""
    tokenizer = recipe["tokenizer"]
    if tokenizer.get("kind") == "words":
        check_word_vocabulary(recipe, dataset)
        return
    if tokenizer.get("checkpoint"):
        return
    capacity = ((dataset.stats or {}).get("vocab_capacity") or {}).get(tokenizer["kind"])
    if capacity and tokenizer["vocab_size"] > capacity:
        raise ValueError(f"the corpus is too small for vocab_size {tokenizer['vocab_size']}: its training split "
                         f"yields at most {capacity} {tokenizer['kind']} tokens; set tokenizer.vocab_size")


def check_word_vocabulary(recipe: dict, dataset: Dataset) -> None:
    """A word-vector method's min_count leaves enough distinct words (from the scan's counts; a
    dataset scanned before they were recorded is checked by the job)."""
    from core.text.words import COUNT_LEVELS, check_size

    counts = (dataset.stats or {}).get("words_at_least")
    min_count = recipe["method_options"].get("min_count", 1)
    if counts and isinstance(min_count, int) and min_count >= 1:
        check_size(counts[min(min_count, COUNT_LEVELS) - 1], min_count)  # above 20: an upper bound
