"""Ranks resume from the checkpoint rank 0 chose, even when their own newest readable file differs."""
from __future__ import annotations

import torch

from core import distributed
from tests.distributed.ranks import run_ranks

CHECKPOINTS = ["ckpt_30", "ckpt_20", "ckpt_10"]  # newest first


def resume_with_unreadable(unreadable_on_rank: int, name: str) -> dict[str, torch.Tensor]:
    """Each rank reads CHECKPOINTS; `name` is unreadable on one rank only (a torn copy)."""
    me = distributed.rank()

    def read(checkpoint_id):
        if me == unreadable_on_rank and checkpoint_id == name:
            raise OSError(f"{checkpoint_id}: torn file")
        return {"step": int(checkpoint_id.split("_")[1])}

    chosen, state = distributed.agreed_resume(CHECKPOINTS, read)
    distributed.check_same_step(state["step"])
    return {"chosen": torch.tensor([CHECKPOINTS.index(chosen)]), "step": torch.tensor([state["step"]])}


def test_ranks_resume_from_rank_0s_choice_when_rank_0_cannot_read_the_newest(tmp_path):
    r0, r1 = run_ranks(resume_with_unreadable, 2, tmp_path, 0, "ckpt_30")
    assert int(r0["step"]) == int(r1["step"]) == 20  # rank 1 could read step 30 but takes rank 0's choice


def test_without_a_group_the_newest_readable_one_is_taken():
    def read(checkpoint_id):
        if checkpoint_id == "ckpt_30":
            raise ValueError("sha256 mismatch")
        return {"step": 20}

    skipped = []
    assert distributed.agreed_resume(CHECKPOINTS, read, lambda c, e: skipped.append(c)) == ("ckpt_20", {"step": 20})
    assert skipped == ["ckpt_30"] and distributed.agreed_resume([], read) == (None, None)
