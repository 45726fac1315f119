"""Rank 0 writes a checkpoint in the background from a snapshot: training goes on meanwhile, and
what is written is the state at the checkpoint's step, not what training made of it since."""
from __future__ import annotations

import threading
import time

import torch
from torch import nn

from jobs import checkpoints
from jobs.specs import PretrainSpec
from tests.conftest import TINY_PRETRAIN
from workers.training import ServiceCallbacks


class SlowStorage:
    """The JobContext surface the callbacks use: storage that waits for `release`; writes give ids."""

    def __init__(self):
        self.job_id, self.store, self.release, self.rows = "job_1", None, threading.Event(), 0

    def with_storage_retries(self, fn):
        assert self.release.wait(30)
        return fn()

    def write(self, fn):
        self.rows += 1
        return f"ckpt_{self.rows}"


class Parts(nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = nn.Linear(2, 2)

    def parts(self):
        return {"backbone": self.backbone}


def test_checkpoint_is_written_in_the_background_from_a_snapshot(monkeypatch):
    written = []
    monkeypatch.setattr(checkpoints, "write_files", lambda store, step, trees, manifest, aliases: written.append(
        (step, trees)) or ("ckpt", {}, manifest))
    ctx, method = SlowStorage(), Parts()
    callbacks = ServiceCallbacks(ctx, PretrainSpec.model_validate(TINY_PRETRAIN), {"backbone": {"name": "x"}},
                                 method, "ds_1", 10)
    before = method.backbone.weight.detach().clone()
    started = time.perf_counter()
    callbacks.on_checkpoint(5, {"method": method.state_dict(), "step": 5}, final=False)
    assert time.perf_counter() - started < 5 and not written  # training goes on while storage is slow
    with torch.no_grad():
        method.backbone.weight.add_(1.0)  # the next steps change the weights in place
    ctx.release.set()
    callbacks.flush()
    (step, trees), = written
    assert step == 5 and torch.equal(trees["backbone"]["weight"], before)
    assert torch.equal(trees["full"]["method"]["backbone.weight"], before)
    callbacks.on_checkpoint(10, {"method": method.state_dict(), "step": 10}, final=True)
    assert callbacks.final_checkpoint == "ckpt_2" and torch.equal(written[1][1]["backbone"]["weight"], before + 1)
