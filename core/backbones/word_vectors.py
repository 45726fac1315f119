"""Static word vectors as a text backbone: a vocabulary (JSON bytes in a buffer, so the
safetensors part is the whole model), one vector per word, for GloVe the context vectors added
(its W + W~ output), and for fastText the n-gram bucket matrix that builds unseen words.

A text is embedded as the mean of its words' unit-normalised vectors. Out-of-vocabulary words
are skipped; with n-gram buckets (fastText) an unseen word is built from its character n-grams
instead (the mean of their bucket vectors, as gensim and fastText do)."""
from __future__ import annotations

import json

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from core.backbones.registry import register_backbone
from core.modalities import TEXT
from core.text.words import split_words


class WordVectors(nn.Module):
    embeds_words = True  # the text consumers' cue: texts -> vectors, no token ids

    def __init__(self, vocab_size: int = 0, dim: int = 100, buckets: int = 0, min_n: int = 3, max_n: int = 6,
                 context: bool = False):
        super().__init__()
        if dim < 1 or vocab_size < 0 or buckets < 0:
            raise ValueError(f"word vectors need dim >= 1, vocab_size >= 0, buckets >= 0 (got {dim}, {vocab_size}, "
                             f"{buckets})")
        if buckets and not 1 <= min_n <= max_n:
            raise ValueError(f"character n-grams need 1 <= min_n <= max_n (got {min_n}, {max_n})")
        self.vocab_size, self.dim, self.buckets, self.min_n, self.max_n = vocab_size, dim, buckets, min_n, max_n
        self.feature_dim = self.embed_dim = dim
        self.max_length = None  # a text of any length is one mean
        self.vectors = nn.Parameter(torch.zeros(vocab_size, dim))
        # GloVe's context vectors W~: the served vector of word i is W[i] + W~[i] (glove.c's -model 2)
        self.context_vectors = nn.Parameter(torch.zeros(vocab_size if context else 0, dim))
        self.register_buffer("ngram_vectors", torch.zeros(buckets, dim))
        self.register_buffer("vocab_bytes", torch.zeros(0, dtype=torch.uint8))
        self._index: dict[str, int] | None = None
        self._words: list[str] | None = None

    # -- the vocabulary travels in the state dict ------------------------------------------------
    def set_vocabulary(self, words: list[str]) -> None:
        if len(words) != self.vocab_size:
            raise ValueError(f"{len(words)} words for {self.vocab_size} vectors")
        data = json.dumps(words, ensure_ascii=False).encode("utf-8")
        self.vocab_bytes = torch.frombuffer(bytearray(data), dtype=torch.uint8).to(self.vectors.device)
        self._words, self._index = list(words), {w: i for i, w in enumerate(words)}

    @property
    def words(self) -> list[str]:
        if self._words is None:
            if not len(self.vocab_bytes):
                raise ValueError("these word vectors have no vocabulary")
            self._words = json.loads(self.vocab_bytes.cpu().numpy().tobytes().decode("utf-8"))
            self._index = {w: i for i, w in enumerate(self._words)}
        return self._words

    @property
    def index(self) -> dict[str, int]:
        self.words  # noqa: B018 (decodes the vocabulary once)
        return self._index

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        saved = state_dict.get(prefix + "vocab_bytes")
        if saved is not None:  # any length: the buffer takes the saved vocabulary's size
            self.vocab_bytes = torch.empty_like(saved, device=self.vocab_bytes.device)
            self._words = self._index = None
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    # -- vectors -----------------------------------------------------------------------------------
    def word_matrix(self) -> Tensor:
        """(V, dim): each vocabulary word's vector."""
        if len(self.context_vectors):
            return self.vectors + self.context_vectors
        return self.vectors

    def ngram_rows(self, word: str) -> list[int]:
        """The bucket rows of a word's character n-grams (of '<word>'), fastText's hashing."""
        from gensim.models.fasttext import ft_ngram_hashes

        return list(ft_ngram_hashes(word, self.min_n, self.max_n, self.buckets)) if self.buckets else []

    @torch.no_grad()
    def lookup(self, words: list[str]) -> tuple[Tensor, list[bool]]:
        """((n, dim) vectors, known): a vocabulary word's vector; an unseen word built from its
        n-grams when there are buckets (known False, vector real), else a zero row."""
        matrix = self.word_matrix()
        out = torch.zeros(len(words), self.dim, device=matrix.device)
        known = []
        for row, word in enumerate(words):
            i = self.index.get(word)
            known.append(i is not None)
            if i is not None:
                out[row] = matrix[i]
            elif self.buckets:
                rows = self.ngram_rows(word)
                if rows:
                    out[row] = self.ngram_vectors[torch.tensor(rows, device=matrix.device)].mean(0)
        return out, known

    @torch.no_grad()
    def embed(self, texts: list[str]) -> tuple[Tensor, list[list[str]]]:
        """((N, dim) float32 mean of each text's unit-normalised word vectors, the words of each
        text that had no vector). A text with no usable word gets a zero row."""
        out = torch.zeros(len(texts), self.dim)
        missing: list[list[str]] = []
        for n, text in enumerate(texts):
            words = split_words(text)
            vectors, known = self.lookup(words)
            usable = [k or bool(self.buckets) for k in known]
            missing.append([w for w, u in zip(words, usable) if not u])
            if any(usable):
                picked = vectors[torch.tensor(usable, device=vectors.device)]
                out[n] = F.normalize(picked.float(), dim=1).mean(0).cpu()
        return out, missing

    @torch.no_grad()
    def neighbors(self, word: str, k: int) -> list[tuple[str, float]]:
        """The k vocabulary words of highest cosine with `word` (itself excluded); KeyError for
        an unknown word without buckets."""
        vectors, known = self.lookup([word])
        if not known[0] and not self.buckets:
            raise KeyError(word)
        matrix = F.normalize(self.word_matrix().float(), dim=1)
        scores = matrix @ F.normalize(vectors[0].float(), dim=0)
        if known[0]:
            scores[self.index[word]] = -float("inf")
        top = scores.topk(min(k, len(self.words) - int(known[0])))
        return [(self.words[i], float(s)) for s, i in zip(top.values.tolist(), top.indices.tolist())]

    def forward(self, texts: list[str]) -> Tensor:
        return self.embed(texts)[0]


@register_backbone("word_vectors", TEXT)
def word_vectors(in_channels: int = 1, image_size: int = 0, vocab_size: int = 0, dim: int = 100, buckets: int = 0,
                 min_n: int = 3, max_n: int = 6, context: bool = False) -> WordVectors:
    # in_channels / image_size are the image backbones' arguments; word vectors have none
    return WordVectors(vocab_size, dim, buckets, min_n, max_n, context)
