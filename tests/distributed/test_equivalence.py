"""2 processes x batch B/2 give the loss and the gradients of 1 process x batch B (gloo, CPU)."""
from __future__ import annotations

import pytest
import torch

from tests.distributed.cases import CASES, run_cases
from tests.distributed.ranks import run_ranks

TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def single_and_pair(tmp_path_factory):
    torch.set_num_threads(1)
    return run_cases(), run_ranks(run_cases, 2, tmp_path_factory.mktemp("ranks"))


@pytest.mark.parametrize("case", list(CASES))
def test_two_ranks_match_one(single_and_pair, case):
    one, (r0, r1) = single_and_pair
    # the run optimises the mean of the ranks' losses; DDP averages the weight gradients
    loss = (r0[f"{case}.loss"] + r1[f"{case}.loss"]) / 2
    assert torch.allclose(loss, one[f"{case}.loss"], atol=TOLERANCE, rtol=0), (loss, one[f"{case}.loss"])
    for rank in (r0, r1):
        diff = (rank[f"{case}.weight_grad"] - one[f"{case}.weight_grad"]).abs().max()
        assert diff <= TOLERANCE, f"{case}: weight gradient differs by {diff:.2e}"
    # a rank's input gradient collects every rank's loss (the collectives' backward sums): 2 x dL/dx
    inputs = torch.cat([r0[f"{case}.input_grad"], r1[f"{case}.input_grad"]]) / 2
    diff = (inputs - one[f"{case}.input_grad"]).abs().max()
    assert diff <= TOLERANCE, f"{case}: input gradient differs by {diff:.2e}"
    assert one[f"{case}.weight_grad"].abs().max() > 1e-4  # the comparison is not between zeros


def test_global_statistics_match(single_and_pair):
    one, (r0, r1) = single_and_pair
    assert torch.allclose(torch.cat([r0["swav.codes"], r1["swav.codes"]]), one["swav.codes"], atol=1e-6)
    for rank in (r0, r1):
        assert torch.allclose(rank["dino.center"], one["dino.center"], atol=1e-6)
        assert torch.allclose(rank["global_batchnorm.running_var"], one["global_batchnorm.running_var"], atol=1e-6)
        assert torch.allclose(rank["global_batchnorm.running_mean"], one["global_batchnorm.running_mean"], atol=1e-6)
        assert torch.equal(rank["queue.items"], one["queue.items"]) and torch.equal(rank["queue.ptr"], one["queue.ptr"])
