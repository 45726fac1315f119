"""wav2vec 2.0 through the one training loop: the loss falls, runs repeat under a seed, resume is exact."""
from __future__ import annotations

import copy

import torch

from core.train import Callbacks, TrainConfig, train
from tests.audio.tiny import padded, tiny_method, word_like


class Keep(Callbacks):
    def __init__(self):
        self.logs, self.states = [], {}

    def on_log(self, step, logs):
        self.logs.append(logs)

    def on_checkpoint(self, step, state, final):
        self.states[step] = copy.deepcopy(state)  # the state holds the live tensors


def config(recipe, steps, **extra):
    return TrainConfig(**{**recipe["train"], "steps": steps, "log_every": 5, "seed": 3, **extra})


def test_a_few_steps_lower_the_loss_and_repeat_exactly_under_a_seed():
    clips = padded(word_like(32), 4800)
    runs = []
    for _ in range(2):
        method, recipe = tiny_method(steps=30, mask_prob=0.5, mask_length=3)
        keep = Keep()
        assert train(method, clips, config(recipe, 30, lr=3e-3), callbacks=keep).reason == "completed"
        runs.append((keep.logs, method.state_dict()))
    logs = runs[0][0]
    assert logs[-1]["contrastive"] < logs[0]["contrastive"] - 0.1, [round(x["contrastive"], 3) for x in logs]
    assert [x["loss"] for x in runs[0][0]] == [x["loss"] for x in runs[1][0]]
    assert all(torch.equal(v, runs[1][1][k]) for k, v in runs[0][1].items())


def test_resume_from_half_way_gives_the_same_parameters():
    clips = padded(word_like(16), 4800)
    whole, recipe = tiny_method(steps=6, mask_length=3)
    keep = Keep()
    train(whole, clips, config(recipe, 6, checkpoint_every=3), callbacks=keep)
    resumed, _ = tiny_method(seed=9, steps=6, mask_length=3)  # a different init: everything comes from the state
    train(resumed, clips, config(recipe, 6), resume=keep.states[3])
    assert all(torch.equal(v, resumed.state_dict()[k]) for k, v in whole.state_dict().items())
