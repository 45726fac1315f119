"""Static word vectors in the library: GloVe's loss against its formula (and its gradient), the
co-occurrence counts by hand, fastText's unseen words as gensim builds them, the WordNet
word-similarity score on constructed vectors, and each method separating two topics' words."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from core.backbones import build_backbone
from core.evaluate.word_similarity import word_similarity
from core.losses.glove import glove_loss
from core.methods import build_resolved
from core.recipes import resolve, words_budget
from core.text.cooccurrence import CooccurrenceBatches, cooccurrence
from core.text.words import VocabularyTooSmall, count_words, vocabulary
from core.train import TrainConfig, train
from tests.text.word_corpus import ANIMALS, TOOLS, topic_corpus


def test_glove_loss_matches_the_hand_written_formula():
    w = torch.tensor([[0.1, -0.2], [0.3, 0.4], [0.0, 0.5]])
    wc = torch.tensor([[0.2, 0.1], [-0.1, 0.3], [0.4, -0.2]])
    b, bc = torch.tensor([0.05, -0.1, 0.2]), torch.tensor([0.0, 0.1, -0.05])
    x = torch.tensor([1.0, 50.0, 250.0])
    expected = 0.0
    for k in range(3):
        f = min(1.0, (float(x[k]) / 100) ** 0.75)
        diff = float(w[k] @ wc[k]) + float(b[k]) + float(bc[k]) - np.log(float(x[k]))
        expected += 0.5 * f * diff**2
    assert float(glove_loss(w, wc, b, bc, x, x_max=100, alpha=0.75)) == pytest.approx(expected, rel=1e-6)


def test_glove_loss_gradient_passes_gradcheck():
    gen = torch.Generator().manual_seed(0)
    args = [torch.randn(4, 3, generator=gen, dtype=torch.float64, requires_grad=True) for _ in range(2)]
    args += [torch.randn(4, generator=gen, dtype=torch.float64, requires_grad=True) for _ in range(2)]
    x = torch.tensor([0.5, 3.0, 99.0, 400.0], dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda *a: glove_loss(*a, x, 100.0, 0.75), args)


def test_cooccurrence_counts_by_hand():
    index = {"a": 0, "b": 1, "c": 2}
    rows, cols, counts = cooccurrence(["a b zz c", "c a"], index, window=2)
    got = {(int(r), int(c)): float(v) for r, c, v in zip(rows, cols, counts)}
    # doc 1 without the unknown word: a b c -> (a,b) 1, (b,c) 1, (a,c) 1/2; doc 2: (c,a) 1; both directions
    assert got == {(0, 1): 1.0, (1, 0): 1.0, (1, 2): 1.0, (2, 1): 1.0, (0, 2): 1.5, (2, 0): 1.5}
    batches = CooccurrenceBatches(rows, cols, counts)
    first = next(batches.batches(4, seed=1, start_step=0))
    again = next(batches.batches(4, seed=1, start_step=0))
    assert first.shape == (4, 3) and torch.equal(first, again)


def test_too_small_a_vocabulary_is_refused():
    with pytest.raises(VocabularyTooSmall, match="at least 10"):
        vocabulary(count_words(["one two three"] * 5), min_count=1)


def test_word_similarity_scores_synonyms_that_are_nearest():
    gen = torch.Generator().manual_seed(0)
    words = [f"w{i}" for i in range(200)]
    vectors = torch.randn(200, 16, generator=gen)
    vectors[1::2] = vectors[0::2] + 0.01 * torch.randn(100, 16, generator=gen)  # w1 ~ w0, w3 ~ w2, ...
    pairs = [(f"w{i}", f"w{i + 1}") for i in range(0, 200, 2)]
    scores = word_similarity(words, vectors, pairs)
    assert scores["synonym_auc"] == 1.0 and scores["synonym_mrr"] == 1.0 and scores["pairs"] == 100
    shuffled = word_similarity(words, torch.randn(200, 16, generator=gen), pairs)
    assert 0.3 < shuffled["synonym_auc"] < 0.7 and shuffled["synonym_mrr"] < 0.2


def trained(method: str, texts: list[str], **overrides):
    recipe = resolve(method, 0, len(texts), overrides)
    words = vocabulary(count_words(texts), recipe["method_options"]["min_count"])
    recipe["backbone_options"]["vocab_size"] = len(words)
    torch.manual_seed(0)
    model = build_resolved(recipe)
    if method == "glove":
        model.backbone.set_vocabulary(words)
        entries = CooccurrenceBatches(*cooccurrence(texts, model.backbone.index, recipe["method_options"]["window"]))
        words_budget(recipe, entries.steps_per_epoch(recipe["train"]["batch_size"]))
        result = train(model, entries, TrainConfig(**{**recipe["train"], "precision": "fp32"}))
        assert result.reason == "completed"
    else:
        model.fit(texts, recipe["train"]["lr"], recipe["train"]["final_lr"], int(recipe["epochs"]), seed=0)
    return model.backbone


# a tiny corpus: no subsampling (every word is "frequent" in 2,000 tokens) and more passes
GENSIM_SMALL = {"method_options": {"sample": 0.0}, "epochs": 20}


@pytest.mark.parametrize("method, overrides", [
    ("word2vec", {"backbone_options": {"dim": 24}, **GENSIM_SMALL}),
    ("word2vec_cbow", {"backbone_options": {"dim": 24}, **GENSIM_SMALL}),
    ("fasttext", {"backbone_options": {"dim": 24, "buckets": 2000}, **GENSIM_SMALL}),
    ("glove", {"backbone_options": {"dim": 16}, "method_options": {"min_count": 2, "window": 5}}),
])
def test_words_sharing_contexts_are_closer_than_random_pairs(method, overrides):
    texts = [r["text"] for r in topic_corpus(150)]
    vectors = trained(method, texts, **overrides)
    unit = F.normalize(vectors.lookup(ANIMALS + TOOLS)[0], dim=1)
    sims = unit @ unit.T
    n = len(ANIMALS)
    topic = torch.tensor([0] * n + [1] * n)
    same_topic = topic[:, None] == topic[None, :]
    itself = torch.eye(2 * n, dtype=torch.bool)
    same, across = sims[same_topic & ~itself].mean(), sims[~same_topic].mean()
    assert same > across + 0.05, (method, float(same), float(across))
    nearest = sims.masked_fill(itself, -2).argmax(1)  # GloVe's vectors share a large common part: rank, not level
    assert bool((topic[nearest] == topic).all()), (method, nearest)


def test_fasttext_builds_unseen_words_as_gensim_does():
    from gensim.models import FastText

    texts = [r["text"] for r in topic_corpus(60)]
    sentences = [t.split() for t in texts]
    model = FastText(sentences, vector_size=12, window=3, min_count=2, bucket=500, min_n=3, max_n=5, epochs=2,
                     seed=0, workers=1)
    net = build_backbone("word_vectors", in_channels=1, image_size=0, vocab_size=len(model.wv.index_to_key), dim=12,
                         buckets=500, min_n=3, max_n=5)
    from core.methods.fasttext import FastText as Method

    wrapper = Method(net)
    wrapper.load_from(model)
    built, known = net.lookup(["hammers", "cat"])
    assert known == [False, True]
    assert torch.allclose(built[0], torch.from_numpy(np.array(model.wv["hammers"])), atol=1e-6)
    assert torch.allclose(built[1], torch.from_numpy(np.array(model.wv["cat"])), atol=1e-6)
