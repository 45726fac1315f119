"""SwAV's queue on 2 gloo ranks: each rank keeps queue_size / world_size rows of its own
embeddings (the official `queue_length // world_size`), a checkpoint carries every rank's rows,
and a resume gives each rank back its own queue (onto one process: all of them)."""
from __future__ import annotations

import torch

from core import distributed
from core.checkpoint import load_tree
from core.train import TrainConfig, train
from tests.core.tiny import TINY_OPTIONS, build_tiny, digits_16
from tests.distributed.loop import Recorder
from tests.distributed.ranks import run_ranks

QUEUE, BATCH, STEPS, STOP = TINY_OPTIONS["queue_size"], 16, 6, 3


def run_swav(stop_at: int | None = None, save_path: str | None = None,
             resume_path: str | None = None) -> dict[str, torch.Tensor]:
    """A tiny SwAV whose queue is used from step 0: its queue buffer, this rank's rows, and (on a
    resume) this rank's rows right after loading the checkpoint."""
    torch.set_num_threads(1)
    images, _ = digits_16(64)
    method = build_tiny("swav", seed=2)
    method.queue_start_steps = 0
    out = {}
    resume = load_tree(resume_path)[0] if resume_path else None
    if resume is not None:
        method.load_state_dict(resume["method"])
        out["loaded"] = method.local_queue().clone()
    config = TrainConfig(steps=STEPS, batch_size=BATCH, lr=1e-3, seed=5, log_every=1, agree_every=1)
    train(method, images, config, "cpu", Recorder(stop_at, save_path), resume)
    out.update(queue=method.queue, local=method.local_queue().clone(),
               state=torch.cat([p.detach().flatten() for p in method.parameters()]),
               rank=torch.tensor([distributed.rank()]))
    return out


def filled_rows(queue: torch.Tensor) -> int:
    return int(queue[0].any(dim=1).sum())


def test_each_rank_keeps_its_share_and_gets_it_back_on_resume(tmp_path):
    saved = tmp_path / "step3.safetensors"
    before = run_ranks(run_swav, 2, tmp_path / "a", STOP, str(saved))
    for r, out in enumerate(before):
        assert out["local"].shape[1] == QUEUE // 2
        assert filled_rows(out["local"]) == STOP * BATCH // 2  # its own half of each step's batch
        assert torch.equal(out["local"], out["queue"][:, r * QUEUE // 2 : (r + 1) * QUEUE // 2])
    assert torch.equal(before[0]["queue"], before[1]["queue"])  # the checkpoint (rank 0's) holds both
    assert not torch.equal(before[0]["local"], before[1]["local"])

    resumed = run_ranks(run_swav, 2, tmp_path / "b", None, None, str(saved))
    for r in range(2):
        assert torch.equal(resumed[r]["loaded"], before[r]["local"])
    straight = run_ranks(run_swav, 2, tmp_path / "c")
    for r in range(2):  # the resumed run goes on exactly as one never stopped
        assert torch.allclose(resumed[r]["local"], straight[r]["local"], atol=1e-5)
        assert torch.allclose(resumed[r]["state"], straight[r]["state"], atol=1e-5)

    alone = run_swav(resume_path=str(saved))  # one process takes every rank's rows
    assert torch.equal(alone["loaded"], torch.cat([before[0]["local"], before[1]["local"]], dim=1))
    new = (STEPS - STOP) * BATCH  # then the whole batches go in front, and the oldest rows out
    assert torch.equal(alone["local"][:, new:], alone["loaded"][:, : QUEUE - new])


def test_one_process_keeps_the_whole_queue():
    out = run_swav()
    assert out["local"].shape[1] == QUEUE and torch.equal(out["local"], out["queue"])
    assert filled_rows(out["local"]) == STEPS * BATCH
