"""Tokenizers trained on a job's corpus (BPE or WordPiece from the `tokenizers` package), with the
special tokens every text method and consumer relies on at fixed ids.

BPE here has no word-boundary marker, which keeps its training deterministic: `tokenizers`
assigns the ids of WordPiece's '##' continuation pieces (and of BPE's end-of-word variants) in
hash-map order, so their merge ties break differently from run to run (huggingface/tokenizers
issue 1794). WordPiece stays available; a run records its tokenizer in every checkpoint and a
resumed run reuses it, so only a fresh run can differ."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Iterable

import torch
from torch import Tensor

KINDS = ("bpe", "wordpiece")
PAD, UNK, CLS, SEP, MASK = 0, 1, 2, 3, 4
SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]  # their ids are their positions
CAPACITY_PROBE = 10_000_000  # a vocabulary size no corpus fills: training with it finds the corpus's capacity


class CorpusTooSmall(ValueError):
    """The corpus cannot fill the requested vocabulary."""


def train_tokenizer(texts: Iterable[str], vocab_size: int, kind: str = "bpe", lowercase: bool = True):
    """A `tokenizers.Tokenizer` trained on `texts`: BERT-style normalisation (NFD, accents
    stripped when lowercasing) and pre-tokenisation (whitespace and punctuation), then WordPiece
    (continuation pieces prefixed '##') or BPE (no boundary marker). Special tokens take
    ids 0..4 (PAD, UNK, CLS, SEP, MASK). Raises CorpusTooSmall when the corpus yields fewer than
    `vocab_size` tokens."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    if kind not in KINDS:
        raise ValueError(f"unknown tokenizer {kind!r}; choose one of {', '.join(KINDS)}")
    if vocab_size <= len(SPECIAL_TOKENS):
        raise ValueError(f"vocab_size {vocab_size} leaves no room beyond the {len(SPECIAL_TOKENS)} special tokens")
    if kind == "wordpiece":
        tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]", max_input_chars_per_word=100))
        trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS,
                                            show_progress=False)
        tokenizer.decoder = decoders.WordPiece()
    else:
        tokenizer = Tokenizer(models.BPE(unk_token="[UNK]"))
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, show_progress=False)
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=lowercase, strip_accents=lowercase or None)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.train_from_iterator(texts, trainer=trainer)
    found = tokenizer.get_vocab_size()
    if vocab_size != CAPACITY_PROBE and found < vocab_size:
        raise CorpusTooSmall(f"the corpus yields only {found} {kind} tokens, fewer than vocab_size {vocab_size}; "
                             f"ask for at most {found} or give more text")
    return tokenizer


def vocab_capacity(texts: list[str], kind: str = "bpe", lowercase: bool = True) -> int:
    """The largest vocabulary this corpus can fill (training stops when nothing is left to merge)."""
    return train_tokenizer(texts, CAPACITY_PROBE, kind, lowercase).get_vocab_size()


def to_bytes(tokenizer) -> bytes:
    return tokenizer.to_str().encode("utf-8")


def from_bytes(data: bytes):
    from tokenizers import Tokenizer

    return Tokenizer.from_str(data.decode("utf-8"))


def fingerprint(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class Encoded:
    """ids: (N, L) int64 padded with PAD, each row [CLS] tokens [SEP]; lengths: tokens per row
    (with CLS and SEP); truncated: whether the text was cut to fit max_length; text_tokens: each
    text's own token count before any cut."""
    ids: Tensor
    lengths: Tensor
    truncated: list[bool]
    text_tokens: list[int]


def encode(tokenizer, texts: list[str], max_length: int) -> Encoded:
    """Tokenise, add [CLS] .. [SEP], cut to max_length (keeping the final [SEP]) and pad."""
    if max_length < 3:
        raise ValueError(f"max_length {max_length} leaves no room for a token between [CLS] and [SEP]")
    rows, counts = [], []
    for encoding in tokenizer.encode_batch(list(texts), add_special_tokens=False):
        counts.append(len(encoding.ids))
        rows.append([CLS, *encoding.ids[: max_length - 2], SEP])
    width = max((len(r) for r in rows), default=2)
    ids = torch.full((len(rows), width), PAD, dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
    lengths = torch.tensor([len(r) for r in rows], dtype=torch.long)
    return Encoded(ids, lengths, [c > max_length - 2 for c in counts], counts)
