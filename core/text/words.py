"""Words for the static word-vector methods (word2vec, fastText, GloVe): one lowercasing word
splitter shared by training, evaluation and serving, and the corpus's vocabulary by count."""
from __future__ import annotations

import re
from collections import Counter
from typing import Iterable

# runs of letters/digits, with inner apostrophes or hyphens kept ("don't", "t-shirt"); punctuation dropped
WORD = re.compile(r"[^\W_]+(?:['\u2019-][^\W_]+)*")
MIN_VOCABULARY = 10  # fewer distinct words than this cannot make neighbours or a probe worth the name
COUNT_LEVELS = 20  # the scan records how many words reach each count 1..COUNT_LEVELS


class VocabularyTooSmall(ValueError):
    """Too few distinct words reach the minimum count."""


def split_words(text: str) -> list[str]:
    return WORD.findall(text.lower())


def count_words(texts: Iterable[str]) -> Counter:
    counts: Counter = Counter()
    for text in texts:
        counts.update(split_words(text))
    return counts


def words_at_least(counts: Counter, levels: int = COUNT_LEVELS) -> list[int]:
    """[number of distinct words seen at least c times for c = 1..levels]: what a dataset row
    records, so that a min_count leaving too few words is refused at submit."""
    histogram = Counter(min(c, levels) for c in counts.values())
    out, running = [], 0
    for c in range(levels, 0, -1):
        running += histogram.get(c, 0)
        out.append(running)
    return out[::-1]


def vocabulary(counts: Counter, min_count: int) -> list[str]:
    """Words seen at least min_count times, most frequent first (ties alphabetical, so the order is
    a function of the corpus alone). Raises VocabularyTooSmall."""
    words = sorted((w for w, c in counts.items() if c >= min_count), key=lambda w: (-counts[w], w))
    check_size(len(words), min_count)
    return words


def check_size(n_words: int, min_count: int) -> None:
    if n_words < MIN_VOCABULARY:
        raise VocabularyTooSmall(f"the corpus has {n_words} distinct words seen at least min_count={min_count} "
                                 f"times; word vectors need at least {MIN_VOCABULARY}: give more text or lower "
                                 "method_options.min_count")
