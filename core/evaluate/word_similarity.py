"""A word-similarity score from WordNet: do a model's vectors put a word's synonyms (the other
single-word lemmas of its synsets) near it?

For each synonym pair (a, b) with both words in the model's vocabulary (at most `max_pairs`,
a seeded sample), with cosine similarity on the word vectors:
- `synonym_auc`: the fraction of pairs where cos(a, b) exceeds cos(a, r) for a random vocabulary
  word r other than a and b (one seeded draw per pair; a tie counts one half). Chance is 0.5.
- `synonym_mrr`: the mean over pairs of 1 / rank of b among all vocabulary words ordered by
  cosine with a (a itself excluded; rank 1 = the nearest). Chance is about ln(V) / V.
- `median_rank`: the median of those ranks; `pairs`: how many pairs were scored."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

MIN_PAIRS = 10


def wordnet_synonym_pairs() -> list[tuple[str, str]]:
    """Unordered pairs of distinct single-word lemmas sharing a synset, over the noun and verb
    (and, where installed, adjective and adverb) data files; lowercased, sorted."""
    from core.data.wordnet import wordnet_dir

    folder = wordnet_dir()
    pairs: set[tuple[str, str]] = set()
    for name in ("data.noun", "data.verb", "data.adj", "data.adv"):
        path = folder / name
        if not path.exists():
            continue
        with open(path, encoding="utf-8") as f:
            for line in f:
                if line.startswith("  "):  # the licence header
                    continue
                fields = line.split("|", 1)[0].split()
                count = int(fields[3], 16)  # wndb(5WN): w_cnt in hex, then (word, lex_id) pairs
                lemmas = {w.lower().split("(")[0] for w in fields[4 : 4 + 2 * count : 2]}
                lemmas = sorted(w for w in lemmas if w.isalpha())
                pairs.update((a, b) for i, a in enumerate(lemmas) for b in lemmas[i + 1 :])
    return sorted(pairs)


@torch.no_grad()
def word_similarity(words: list[str], vectors: Tensor, pairs: list[tuple[str, str]], seed: int = 0,
                    max_pairs: int = 5000, chunk: int = 512) -> dict[str, float]:
    """The scores above for vocabulary `words` with (V, dim) `vectors`. ValueError when fewer
    than MIN_PAIRS synonym pairs are in the vocabulary."""
    index = {w: i for i, w in enumerate(words)}
    known = [(index[a], index[b]) for a, b in pairs if a in index and b in index]
    if len(known) < MIN_PAIRS:
        raise ValueError(f"only {len(known)} WordNet synonym pairs are in the vocabulary (need {MIN_PAIRS})")
    rng = np.random.default_rng(seed)
    if len(known) > max_pairs:
        known = [known[i] for i in sorted(rng.choice(len(known), max_pairs, replace=False))]
    a = torch.tensor([p[0] for p in known])
    b = torch.tensor([p[1] for p in known])
    r = torch.from_numpy(rng.integers(0, len(words), len(known)))
    clash = (r == a) | (r == b)
    while clash.any():  # the random word is neither of the pair
        r[clash] = torch.from_numpy(rng.integers(0, len(words), int(clash.sum())))
        clash = (r == a) | (r == b)
    unit = F.normalize(vectors.float(), dim=1)
    sim_ab = (unit[a] * unit[b]).sum(1)
    sim_ar = (unit[a] * unit[r]).sum(1)
    auc = ((sim_ab > sim_ar).float() + 0.5 * (sim_ab == sim_ar).float()).mean()
    ranks = torch.empty(len(known))
    for start in range(0, len(known), chunk):
        rows, synonyms = a[start : start + chunk], b[start : start + chunk]
        sims = unit[rows] @ unit.T  # (chunk, V)
        own = sims[torch.arange(len(rows)), synonyms]  # from the same product, so rounding cannot reorder it
        sims[torch.arange(len(rows)), rows] = -float("inf")  # a itself is not a neighbour
        ranks[start : start + chunk] = 1 + (sims > own[:, None]).sum(1).float()
    return {"synonym_auc": float(auc), "synonym_mrr": float((1 / ranks).mean()),
            "median_rank": float(ranks.median()), "pairs": float(len(known)), "vocabulary": float(len(words))}


def token_words(tokenizer, embedding: Tensor) -> tuple[list[str], Tensor]:
    """(whole-word tokens, their input-embedding rows) of a subword model: tokens of letters only,
    two or more, lowercased (BPE without boundary markers cannot tell a word from a piece that
    spells one, so some of these are word pieces)."""
    items = sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1])
    chosen = [(t.lower(), i) for t, i in items if t.isalpha() and len(t) > 1 and i < len(embedding)]
    seen: dict[str, int] = {}
    for word, i in chosen:
        seen.setdefault(word, i)
    return list(seen), embedding[list(seen.values())]
