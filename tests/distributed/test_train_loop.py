"""The training loop on 2 gloo ranks against 1 process: same losses, same weights, the same
checkpoint tensors, and a run started on 2 processes resumes on 1 exactly."""
from __future__ import annotations

import pytest
import torch

from core.checkpoint import load_tree
from tests.distributed import loop
from tests.distributed.ranks import run_ranks

TOLERANCE = 1e-4  # a few optimiser steps of float32 sums taken in another order


def max_state_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max((a[k] - b[k]).abs().max().item() for k in a if k.startswith("state."))


@pytest.fixture(scope="module")
def single():
    return loop.run()


def test_two_ranks_train_like_one(single, tmp_path):
    r0, r1 = run_ranks(loop.run, 2, tmp_path)
    assert int(r0["world"]) == 2
    logged = ~torch.isnan(single["losses"])
    assert logged.sum() == loop.STEPS
    assert torch.allclose(r0["losses"][logged], single["losses"][logged], atol=TOLERANCE), (r0["losses"], single["losses"])
    assert max_state_diff(r0, single) <= TOLERANCE
    assert max_state_diff(r1, r0) == 0  # every rank holds the same weights and buffers
    assert torch.isnan(r1["losses"]).all()  # only rank 0 reports


def test_resume_on_a_different_world_size(single, tmp_path):
    saved = tmp_path / "step3.safetensors"
    run_ranks(loop.run, 2, tmp_path / "ranks", "simclr", 3, str(saved))
    state, _ = load_tree(saved)
    assert state["step"] == 3
    assert set(state["method"]) == set(loop.build_method().state_dict())  # no `module.` prefixes
    resumed = loop.run(resume_path=str(saved))
    assert max_state_diff(resumed, single) <= TOLERANCE
    later = ~torch.isnan(resumed["losses"])
    assert torch.allclose(resumed["losses"][later], single["losses"][later], atol=TOLERANCE)


def test_a_stop_takes_effect_at_the_next_agreement_on_every_rank(tmp_path):
    """Rank 0's decision is broadcast every agree_every steps: a stop asked at step 2 with
    agree_every 4 ends every rank at step 4, and the final checkpoint is that step's."""
    saved = tmp_path / "stop.safetensors"
    r0, r1 = run_ranks(loop.run, 2, tmp_path / "ranks", "simclr", 2, str(saved), None, loop.STEPS, 4)
    assert int(r0["stopped_at"]) == int(r1["stopped_at"]) == 4
    assert load_tree(saved)[0]["step"] == 4
    assert max_state_diff(r1, r0) == 0


def test_every_method_trains_on_two_ranks_in_lockstep(tmp_path):
    """No method deadlocks (every rank makes the same collectives), and the ranks end with the
    same weights and buffers: queues, centers, memory banks, prototypes."""
    r0, r1 = run_ranks(loop.run_every_method, 2, tmp_path)
    methods = {k.split(".", 1)[0] for k in r0}
    from core.methods import method_info, method_names

    assert methods == {n for n in method_names() if method_info(n).modality == "image"}
    differ = {key for key in r0 if not torch.allclose(r0[key], r1[key], atol=1e-6)}
    assert differ == set()  # SwAV's queue buffer holds every rank's rows on every rank
    # DDP searches for unused parameters only where some get no gradient: SwAV's frozen prototypes
    received = {name: r0[f"{name}.find_unused"].tolist() for name in methods}
    assert received == {name: [name == "swav"] for name in methods}
