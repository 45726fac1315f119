"""Tokenised corpora and their training batches: length-bucketed, padded, and a pure function of
(seed, step), so that a resumed run sees exactly the batches an uninterrupted one would."""
from __future__ import annotations

from typing import Iterator

import numpy as np
import torch
from torch import Tensor

from core.seeds import step_seed
from core.text.tokenizer import CLS, PAD, SEP


class TokenizedCorpus:
    """Every document as [CLS] tokens [SEP], cut to max_length, held as one flat int32 array
    with offsets (a few bytes per token, whatever the number of documents)."""

    def __init__(self, flat: np.ndarray, offsets: np.ndarray, truncated: int = 0):
        self.flat, self.offsets, self.truncated = flat, offsets, truncated
        self.lengths = np.diff(offsets)

    @classmethod
    def from_texts(cls, tokenizer, texts: list[str], max_length: int, chunk: int = 10_000) -> "TokenizedCorpus":
        if max_length < 3:
            raise ValueError(f"max_length {max_length} leaves no room for a token between [CLS] and [SEP]")
        pieces, lengths, truncated = [], [], 0
        for start in range(0, len(texts), chunk):
            for encoding in tokenizer.encode_batch(texts[start : start + chunk], add_special_tokens=False):
                ids = encoding.ids
                truncated += len(ids) > max_length - 2
                row = np.asarray([CLS, *ids[: max_length - 2], SEP], dtype=np.int32)
                pieces.append(row)
                lengths.append(len(row))
        offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        flat = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.int32)
        return cls(flat, offsets, truncated)

    def __len__(self) -> int:
        return len(self.lengths)

    def n_tokens(self) -> int:
        return int(self.lengths.sum())

    def batch(self, indices) -> Tensor:
        """(len(indices), longest) int64 ids, PAD after each document."""
        indices = np.asarray(indices, dtype=np.int64)
        width = int(self.lengths[indices].max()) if len(indices) else 2
        out = np.full((len(indices), width), PAD, dtype=np.int64)
        for row, i in enumerate(indices):
            out[row, : self.lengths[i]] = self.flat[self.offsets[i] : self.offsets[i + 1]]
        return torch.from_numpy(out)

    def subset(self, indices) -> "TokenizedCorpus":
        indices = np.asarray(indices, dtype=np.int64)
        rows = [self.flat[self.offsets[i] : self.offsets[i + 1]] for i in indices]
        offsets = np.zeros(len(rows) + 1, dtype=np.int64)
        np.cumsum([len(r) for r in rows], out=offsets[1:])
        return TokenizedCorpus(np.concatenate(rows) if rows else self.flat[:0], offsets)


class TokenBatches:
    """A core.train BatchStream of (B, L) int64 token batches. Each epoch is a seeded permutation
    cut into windows of `bucket` batches; inside a window documents are sorted by length, cut
    into batches, and the batches shuffled, so a batch holds documents of similar length (little
    padding) while the order stays random. The last partial batch of an epoch is dropped."""

    def __init__(self, corpus: TokenizedCorpus, bucket: int = 50):
        self.corpus, self.bucket = corpus, bucket
        self._plan: tuple[int, int, int, list[np.ndarray]] | None = None  # (seed, epoch, batch_size, batches)

    def epoch_plan(self, batch_size: int, seed: int, epoch: int) -> list[np.ndarray]:
        if self._plan is not None and self._plan[:3] == (seed, epoch, batch_size):
            return self._plan[3]
        n = len(self.corpus)
        per_epoch = n // batch_size
        rng = np.random.default_rng(step_seed(seed, epoch, stream=1))
        order = rng.permutation(n)[: per_epoch * batch_size]
        batches = []
        window = batch_size * self.bucket
        for start in range(0, len(order), window):
            chunk = order[start : start + window]
            chunk = chunk[np.argsort(self.corpus.lengths[chunk], kind="stable")]
            group = [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
            batches.extend(group[j] for j in rng.permutation(len(group)))
        self._plan = (seed, epoch, batch_size, batches)
        return batches

    def batches(self, batch_size: int, seed: int, start_step: int) -> Iterator[Tensor]:
        if batch_size > len(self.corpus):
            raise ValueError(f"batch size {batch_size} is larger than the corpus ({len(self.corpus)} documents)")
        per_epoch = len(self.corpus) // batch_size
        step = start_step
        while True:
            epoch, within = divmod(step, per_epoch)
            yield self.corpus.batch(self.epoch_plan(batch_size, seed, epoch)[within])
            step += 1
