"""Evaluation of text encoders inside the child: a text checkpoint, a random-init encoder or the
TF-IDF baseline turns each split's documents into features, and the feature protocols (kNN,
linear, few-shot, clustering, health) run on them through workers/eval_common.py's one loop."""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

import torch

from core.backbones import build_backbone
from core.data.text import TextDataset
from core.data.text_batches import TokenizedCorpus
from core.evaluate.text import text_features, tfidf_features
from core.evaluate.word_similarity import token_words, word_similarity, wordnet_synonym_pairs
from core.text.tokenizer import CorpusTooSmall, train_tokenizer
from core.data import DatasetUnavailable
from core.modalities import TEXT
from jobs import scores, text
from jobs.specs import EmbedIndexSpec, EvaluateSpec
from jobs.tables import Dataset, Job
from workers.context import JobContext
from workers.eval_common import (Progress, Source, cached_features, checkpoint_encoder, evaluate_sources,
                                 feature_protocols, run_protocols)

RANDOM_INIT_BACKBONE = "text_tiny"
RANDOM_INIT_VOCAB = 8000


@dataclass
class TextSplit:
    """A split's documents with labels as a tensor (-1 unlabelled), as evaluate_source expects."""
    texts: list[str]
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.texts)

    @classmethod
    def of(cls, data: TextDataset) -> "TextSplit":
        return cls(data.texts, torch.tensor(data.labels, dtype=torch.long))


@dataclass
class TextSource(Source):
    tfidf: dict = field(default_factory=dict)  # the TF-IDF baseline's features by split


def open_text_source(ctx: JobContext, ref: str, dataset_row: Dataset, train: TextSplit, test: TextSplit, seed: int,
                     backbone: str | None = None, backbone_options: dict | None = None) -> TextSource:
    if ref == "tfidf":
        train_x, test_x = tfidf_features(train.texts, test.texts, seed=seed)
        return TextSource("tfidf", None, who={"baseline": ref, "method": ref}, tfidf={"train": train_x, "test": test_x})
    if ref == "random-init":
        return random_init_source(train, seed, backbone, backbone_options)
    if ref == "raw-pixels":
        raise ValueError("raw-pixels is an image baseline; text datasets have tfidf and random-init")
    row, encoder, _, who = checkpoint_encoder(
        ctx, ref, TEXT, f"checkpoint {ref} embeds {{got}}s; dataset {dataset_row.id} is text")
    return TextSource(row.id, encoder, who=who)


def random_init_source(train: TextSplit, seed: int, backbone: str | None, backbone_options: dict | None) -> TextSource:
    """An untrained encoder (seeded) with a tokenizer trained on the training split: what the
    architecture and tokenizer give before any pretraining."""
    name = backbone or RANDOM_INIT_BACKBONE
    options = dict(backbone_options or {})
    vocab = options.pop("vocab_size", RANDOM_INIT_VOCAB)
    try:
        tokenizer = train_tokenizer(train.texts, vocab)
    except CorpusTooSmall:
        tokenizer = train_tokenizer(train.texts, 10_000_000)  # as large as the corpus allows
        vocab = tokenizer.get_vocab_size()
    torch.manual_seed(seed)
    encoder = build_backbone(name, in_channels=1, image_size=0, vocab_size=vocab, **options)
    encoder.set_tokenizer(tokenizer)
    tag = hashlib.sha256(json.dumps({**options, "vocab_size": vocab}, sort_keys=True).encode()).hexdigest()[:8]
    return TextSource(f"random-init-{name}-{tag}-s{seed}", encoder, who={"baseline": "random-init",
                                                                         "method": "random-init", "backbone": name})


def text_split_features(ctx: JobContext, source: TextSource, dataset_row: Dataset, split: str, data: TextSplit,
                        device):
    """Features of one split's documents (cached in the artifact store for encoders)."""
    if source.encoder is None:
        return source.tfidf[split]

    def compute():
        if getattr(source.encoder, "embeds_words", False):  # word vectors: the mean of each text's words
            return source.encoder.cpu().embed(data.texts)[0]
        corpus = TokenizedCorpus.from_texts(source.encoder.tokenizer, data.texts, source.encoder.max_length)
        return text_features(source.encoder, corpus, device=device)

    return cached_features(ctx, source, dataset_row, split, compute, data.labels)


def evaluate_text_encoder(ctx: JobContext, encoder, train: TextDataset, test: TextDataset, protocols: list[dict],
                          seed: int, device, *, dataset_id: str, checkpoint_id: str | None, method: str,
                          backbone: str, compute_seconds: float) -> dict:
    """A text pretrain job's auto-evaluation of its final encoder."""
    dataset_row = ctx.write(lambda s: s.get(Dataset, dataset_id))
    who = {"checkpoint_id": checkpoint_id, "method": method, "backbone": backbone, "compute_seconds": compute_seconds}
    source = TextSource(checkpoint_id or f"job-{ctx.job_id}", encoder, who=who)
    results, _ = run_protocols(ctx, source, dataset_row, TextSplit.of(train), TextSplit.of(test),
                               feature_protocols(ctx, protocols), seed, device, None, featurize=text_split_features)
    return results


def run_evaluate_text(ctx: JobContext, spec: EvaluateSpec, dataset_row: Dataset, device):
    train_set, test_set = text.load_splits(ctx.settings, ctx.store, dataset_row)
    train, test = TextSplit.of(train_set), TextSplit.of(test_set)
    protocols = feature_protocols(ctx, [p.model_dump() for p in spec.protocols])

    def evaluate_ref(ref: str, progress: Progress):
        source = open_text_source(ctx, ref, dataset_row, train, test, spec.seed, spec.backbone, spec.backbone_options)
        return run_protocols(ctx, source, dataset_row, train, test, protocols, spec.seed, device, progress,
                             featurize=text_split_features)

    return evaluate_sources(ctx, spec.sources(), protocols, evaluate_ref)


def text_index_features(ctx: JobContext, spec: EmbedIndexSpec, dataset_row: Dataset,
                        device) -> tuple[TextSplit, torch.Tensor]:
    """(the split's documents, their features) for an embed-index job on a text dataset."""
    train_set, test_set = text.load_splits(ctx.settings, ctx.store, dataset_row)
    data = TextSplit.of(train_set if spec.split == "train" else test_set)
    source = open_text_source(ctx, spec.checkpoint, dataset_row, data, data, 0)
    return data, text_split_features(ctx, source, dataset_row, spec.split, data, device)


def record_word_similarity(ctx: JobContext, words: list[str], vectors: torch.Tensor, seed: int, *, dataset_id: str,
                           checkpoint_id: str | None, method: str, backbone: str, compute_seconds: float) -> dict:
    """The WordNet word-similarity score (core.evaluate.word_similarity) of a model's word vectors
    as `scores` rows of protocol 'word-similarity'; skipped with a log line without WordNet or
    with too few synonym pairs in the vocabulary."""
    try:
        values = word_similarity(words, vectors.float().cpu(), wordnet_synonym_pairs(), seed=seed)
    except (DatasetUnavailable, ValueError) as exc:
        ctx.event("log", f"word-similarity skipped: {exc}")
        return {}
    options = {"pairs": "WordNet synonyms (single-word lemmas sharing a synset)", "max_pairs": 5000, "seed": seed}

    def write(session):
        job = session.get(Job, ctx.job_id)
        scores.record(session, project_id=job.project_id, dataset_id=dataset_id, protocol="word-similarity",
                      values=values, checkpoint_id=checkpoint_id, method=method, backbone=backbone,
                      eval_job_id=ctx.job_id, options=options, compute_seconds=compute_seconds)

    ctx.write(write)
    return {"word-similarity": values}


def subword_word_similarity(ctx: JobContext, encoder, seed: int, **who) -> dict:
    """The word-similarity score of a subword encoder (mlm, simcse): its input embedding rows of
    the tokens that spell whole words (core.evaluate.word_similarity.token_words)."""
    words, rows = token_words(encoder.tokenizer, encoder.token_embed.weight.detach())
    return record_word_similarity(ctx, words, rows, seed, **who)
