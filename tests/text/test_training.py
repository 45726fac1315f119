"""Text methods in the one training loop: length-bucketed batches that are a function of
(seed, step), exact resume, both methods learning on real glosses, and the held-out
masked-token scores against an independent unigram computation."""
from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch

from core.data.text_batches import TokenBatches, TokenizedCorpus
from core.evaluate.text import masked_token_scores, text_features, unigram_counts
from core.methods import build_resolved
from core.recipes import resolve
from core.text.tokenizer import PAD
from core.train import Callbacks, TrainConfig, train


@pytest.fixture(scope="module")
def corpus(tokenizer, gloss_texts):
    return TokenizedCorpus.from_texts(tokenizer, gloss_texts, 32)


def method_for(name: str, tokenizer, steps: int, **overrides):
    recipe = resolve(name, 0, 1000, {"steps": steps, "batch_size": 32, "tokenizer": {"vocab_size": 500},
                                     "backbone_options": {"max_length": 32}, **overrides})
    torch.manual_seed(0)
    method = build_resolved(recipe)
    method.backbone.set_tokenizer(tokenizer)
    return method, TrainConfig(**recipe["train"])


def test_batches_cover_each_epoch_once_with_little_padding(corpus):
    stream = TokenBatches(corpus)
    per_epoch = len(corpus) // 32
    seen = np.concatenate(stream.epoch_plan(32, seed=0, epoch=0))
    assert len(seen) == per_epoch * 32 == len(set(seen.tolist()))
    batches = list(zip(range(per_epoch), stream.batches(32, seed=0, start_step=0)))
    padding = sum(int((b == PAD).sum()) for _, b in batches) / sum(b.numel() for _, b in batches)
    shuffled = torch.randperm(len(corpus), generator=torch.Generator().manual_seed(0))[: per_epoch * 32]
    random_padding = np.mean([float((corpus.batch(chunk.numpy()) == PAD).float().mean()) for chunk in shuffled.split(32)])
    assert padding < random_padding / 2, (padding, random_padding)


def test_batches_are_a_function_of_seed_and_step(corpus):
    straight = [b for _, b in zip(range(50), TokenBatches(corpus).batches(32, seed=3, start_step=0))]
    resumed = next(TokenBatches(corpus).batches(32, seed=3, start_step=41))
    assert torch.equal(straight[41], resumed)
    other = next(TokenBatches(corpus).batches(32, seed=4, start_step=41))
    assert not torch.equal(other, resumed) or other.shape != resumed.shape


class Keep(Callbacks):
    def __init__(self):
        self.states = {}

    def on_checkpoint(self, step, state, final):
        self.states[step] = copy.deepcopy(state)  # the live tensors go on changing


@pytest.mark.parametrize("name", ["mlm", "simcse", "mlm+simcse"])
def test_resume_replays_the_uninterrupted_run(tokenizer, corpus, name):
    method, config = method_for(name, tokenizer, 6)
    config.checkpoint_every = 3
    straight = Keep()
    train(method, TokenBatches(corpus), config, callbacks=straight)
    again, _ = method_for(name, tokenizer, 6)
    resumed = Keep()
    train(again, TokenBatches(corpus), config, callbacks=resumed, resume=straight.states[3])
    for key, value in straight.states[6]["method"].items():
        assert torch.equal(value, resumed.states[6]["method"][key]), key
    assert straight.states[6]["config"]["steps"] == 6 and straight.states[6]["views"] is None


def test_held_out_unigram_scores_match_a_hand_computation(tokenizer, corpus):
    method, _ = method_for("mlm", tokenizer, 1)
    held_out = corpus.subset(range(100))
    counts = unigram_counts(corpus, 500)
    scores = masked_token_scores(method.backbone, method.head, held_out, counts, seed=0)
    # the same masked positions, drawn as masked_token_scores draws them
    from core.evaluate.text import by_length
    from core.text.masking import IGNORE, mask_tokens

    gen = torch.Generator().manual_seed(0)
    targets = []
    for indices in by_length(held_out, 256):
        _, t = mask_tokens(held_out.batch(indices), gen, 500, mask_prob=1.0, random_prob=0.0)
        targets += t[t != IGNORE].tolist()
    ordinary = counts[5:] + 1
    p = {i + 5: float(c / ordinary.sum()) for i, c in enumerate(ordinary)}
    top = max(range(5, 500), key=lambda i: counts[i])
    assert scores["unigram"]["masked_tokens"] == len(targets) > 100
    assert scores["unigram"]["accuracy"] == pytest.approx(sum(t == top for t in targets) / len(targets))
    assert scores["unigram"]["perplexity"] == pytest.approx(math.exp(-np.mean([math.log(p[t]) for t in targets])),
                                                            rel=1e-4)
    assert scores["model"]["perplexity"] > 100  # an untrained model knows less than the unigram counts


def test_mlm_learns_more_than_unigram_and_simcse_separates_classes(tokenizer, corpus, gloss_texts):
    from core.evaluate.knn import knn_accuracy
    from tests.text.corpus import glosses

    labels = torch.tensor([["noun.animal", "noun.plant", "noun.artifact", "verb.motion"].index(r["label"])
                           for r in glosses(per_class=300)])
    train_idx, test_idx = torch.arange(len(corpus)) % 5 != 0, torch.arange(len(corpus)) % 5 == 0
    train_part = corpus.subset(train_idx.nonzero().squeeze(1).numpy())
    test_part = corpus.subset(test_idx.nonzero().squeeze(1).numpy())

    mlm, config = method_for("mlm", tokenizer, 200, lr=3e-3, backbone_options={"max_length": 32, "dropout": 0.0})
    train(mlm, TokenBatches(train_part), config)
    scores = masked_token_scores(mlm.backbone, mlm.head, test_part, unigram_counts(train_part, 500))
    assert scores["model"]["perplexity"] < 0.95 * scores["unigram"]["perplexity"], scores

    def knn(encoder):
        features = text_features(encoder, corpus)
        return knn_accuracy(features[train_idx], labels[train_idx], features[test_idx], labels[test_idx], k=20)

    simcse, config = method_for("simcse", tokenizer, 150)
    before = knn(simcse.backbone)  # an untrained encoder already sorts 4 coarse classes well (0.76)
    train(simcse, TokenBatches(train_part), config)
    after = knn(simcse.backbone)
    assert after > before + 0.02, (before, after)
    assert text_features(simcse.backbone, test_part).std(0).min() > 1e-3  # no dimension collapsed
