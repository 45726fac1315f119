"""Tokenizers trained per job: fixed special ids, both kinds, a clear error for a small corpus,
[CLS] .. [SEP] encoding with truncation reported, and a byte round trip."""
from __future__ import annotations

import pytest

from core.text.tokenizer import (CLS, MASK, PAD, SEP, SPECIAL_TOKENS, CorpusTooSmall, encode, from_bytes, to_bytes,
                                 train_tokenizer, vocab_capacity)


@pytest.mark.parametrize("kind", ["wordpiece", "bpe"])
def test_trained_tokenizer_has_the_asked_size_and_fixed_special_ids(gloss_texts, kind):
    tokenizer = train_tokenizer(gloss_texts, 400, kind)
    assert tokenizer.get_vocab_size() == 400
    assert [tokenizer.token_to_id(t) for t in SPECIAL_TOKENS] == [PAD, 1, CLS, SEP, MASK]
    tokens = tokenizer.encode("A Domesticated Animal").tokens
    assert tokens and all(t == t.lower() for t in tokens)  # lowercased, BERT-style


def test_a_corpus_too_small_for_the_vocabulary_is_refused_with_its_capacity(gloss_texts):
    capacity = vocab_capacity(gloss_texts[:50])
    with pytest.raises(CorpusTooSmall, match=f"only {capacity} bpe tokens"):
        train_tokenizer(gloss_texts[:50], capacity + 1)
    assert train_tokenizer(gloss_texts[:50], capacity).get_vocab_size() == capacity


def test_encode_adds_cls_and_sep_and_reports_truncation(tokenizer):
    encoded = encode(tokenizer, ["a dog", "a very long gloss " * 10], max_length=8)
    assert encoded.ids.shape == (2, 8)
    assert encoded.ids[0, 0] == CLS and encoded.ids[0, encoded.lengths[0] - 1] == SEP
    assert (encoded.ids[0, encoded.lengths[0]:] == PAD).all()
    assert encoded.ids[1, -1] == SEP and encoded.truncated == [False, True]
    assert encoded.text_tokens[1] > 6 and encoded.lengths.tolist() == [encoded.text_tokens[0] + 2, 8]


def test_tokenizer_survives_bytes(tokenizer):
    again = from_bytes(to_bytes(tokenizer))
    assert again.encode("an animal that barks").ids == tokenizer.encode("an animal that barks").ids


def test_bad_vocab_sizes_and_kinds(gloss_texts):
    with pytest.raises(ValueError, match="no room"):
        train_tokenizer(gloss_texts, 5)
    with pytest.raises(ValueError, match="unknown tokenizer"):
        train_tokenizer(gloss_texts, 100, "unigram")


def test_bpe_training_is_deterministic(gloss_texts):
    first, second = train_tokenizer(gloss_texts, 600), train_tokenizer(gloss_texts, 600)
    assert first.get_vocab() == second.get_vocab()
