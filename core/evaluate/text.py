"""Frozen text features, and held-out masked-token accuracy and perplexity against a unigram model."""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from core.data.text_batches import TokenizedCorpus
from core.text.masking import IGNORE, mask_tokens
from core.text.tokenizer import SPECIAL_TOKENS


def by_length(corpus: TokenizedCorpus, batch_size: int):
    """Index batches of documents of similar length (less padding), covering every document once."""
    order = np.argsort(corpus.lengths, kind="stable")
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


@torch.no_grad()
def text_features(encoder: nn.Module, corpus: TokenizedCorpus, batch_size: int = 256,
                  device: str | torch.device = "cpu") -> Tensor:
    """(N, feature_dim) float32 features on the CPU, in the corpus's order."""
    encoder = encoder.to(device).eval()
    out = torch.zeros(len(corpus), encoder.feature_dim)
    for indices in by_length(corpus, batch_size):
        out[torch.from_numpy(indices)] = encoder(corpus.batch(indices).to(device)).float().cpu()
    return out


def unigram_counts(corpus: TokenizedCorpus, vocab_size: int) -> Tensor:
    """Counts of each ordinary token (specials left at 0) over a corpus."""
    counts = torch.bincount(torch.from_numpy(corpus.flat.astype(np.int64)), minlength=vocab_size).double()
    counts[: len(SPECIAL_TOKENS)] = 0
    return counts


@torch.no_grad()
def masked_token_scores(encoder: nn.Module, head: nn.Module, corpus: TokenizedCorpus, train_counts: Tensor,
                        seed: int = 0, select_prob: float = 0.15, batch_size: int = 256,
                        device: str | torch.device = "cpu") -> dict[str, dict[str, float]]:
    """Masked-token accuracy and perplexity on held-out documents: 15 % of ordinary tokens, all
    replaced by [MASK] (a seeded draw, the same for every model), and the same numbers for the
    unigram model of the training split (add-one smoothed counts). Perplexity is exp of the mean
    cross entropy at the masked positions. Returns {"model": {...}, "unigram": {...}}."""
    encoder, head = encoder.to(device).eval(), head.to(device).eval()
    gen = torch.Generator(device=device).manual_seed(seed)
    log_unigram = torch.log((train_counts + 1) / (train_counts + 1)[len(SPECIAL_TOKENS):].sum()).float().to(device)
    unigram_guess = int(train_counts.argmax())
    correct = nll = unigram_correct = unigram_nll = 0.0
    n = 0
    for indices in by_length(corpus, batch_size):
        ids = corpus.batch(indices).to(device)
        inputs, targets = mask_tokens(ids, gen, encoder.vocab_size, select_prob, mask_prob=1.0, random_prob=0.0)
        selected = targets != IGNORE
        if not selected.any():
            continue
        truth = targets[selected]
        logits = head(encoder.tokens(inputs)[selected], encoder.token_embed.weight).float()
        correct += float((logits.argmax(1) == truth).sum())
        nll += float(F.cross_entropy(logits, truth, reduction="sum"))
        unigram_correct += float((truth == unigram_guess).sum())
        unigram_nll -= float(log_unigram[truth].sum())
        n += len(truth)
    if n == 0:
        raise ValueError("the held-out text has no token to mask")
    return {"model": {"accuracy": correct / n, "perplexity": math.exp(nll / n), "masked_tokens": float(n)},
            "unigram": {"accuracy": unigram_correct / n, "perplexity": math.exp(unigram_nll / n),
                        "masked_tokens": float(n)}}


def tfidf_features(train_texts: list[str], other_texts: list[str], max_features: int = 50_000, dims: int = 256,
                   seed: int = 0) -> tuple[Tensor, Tensor]:
    """The TF-IDF baseline's features for the training texts and for `other_texts`: sublinear
    term frequencies of the training split's `max_features` most frequent words times their
    inverse document frequency, L2-normalised per document (sklearn's TfidfVectorizer), then
    projected on the training split's top `dims` singular directions (LSA, Deerwester et al.,
    1990), so the probes see a dense vector of an encoder's size; dims 0 keeps the raw TF-IDF."""
    from sklearn.decomposition import TruncatedSVD
    from sklearn.feature_extraction.text import TfidfVectorizer

    vectorizer = TfidfVectorizer(sublinear_tf=True, max_features=max_features)
    train = vectorizer.fit_transform(train_texts)
    other = vectorizer.transform(other_texts)
    if dims and dims < min(train.shape):
        svd = TruncatedSVD(dims, random_state=seed).fit(train)
        train, other = svd.transform(train), svd.transform(other)
    else:
        train, other = train.toarray(), other.toarray()
    return torch.from_numpy(train.astype(np.float32)), torch.from_numpy(other.astype(np.float32))
