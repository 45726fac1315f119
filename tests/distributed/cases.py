"""Losses evaluated on one rank's slice of a fixed global batch, through a tiny linear encoder
wrapped in DistributedDataParallel (plain at world size 1). Importable by spawned ranks."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from core import distributed
from core.losses.barlow_twins import barlow_twins_loss
from core.losses.dino import dino_loss, updated_center
from core.losses.infonce import info_nce
from core.losses.nt_xent import nt_xent
from core.losses.sigreg import random_directions, sigreg
from core.losses.swav import prototype_scores, sinkhorn, swav_loss
from core.losses.vicreg import vicreg_loss
from core.methods.feature_queue import FeatureQueue

BATCH, DIM_IN, DIM = 8, 12, 6


def global_inputs() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(7)
    return {"x1": torch.randn(BATCH, DIM_IN, generator=g), "x2": torch.randn(BATCH, DIM_IN, generator=g),
            "keys": torch.randn(BATCH, DIM, generator=g), "protos": F.normalize(torch.randn(5, DIM, generator=g), dim=1),
            "t1": torch.randn(BATCH, DIM, generator=g), "t2": torch.randn(BATCH, DIM, generator=g),
            "center": torch.randn(DIM, generator=g) * 0.1}


def _simclr(z1, z2, inp, mine):
    return nt_xent(z1, z2, 0.2), {}


def _moco_v3(z1, z2, inp, mine):
    return info_nce(z1, inp["keys"][mine], temperature=0.2) + info_nce(z2, inp["t1"][mine], temperature=0.2), {}


def _barlow(z1, z2, inp, mine):
    return barlow_twins_loss(z1, z2, 5e-3), {}


def _vicreg(z1, z2, inp, mine):
    return vicreg_loss(z1, z2)[0], {}


def _swav(z1, z2, inp, mine):
    e1, e2 = F.normalize(z1, dim=1), F.normalize(z2, dim=1)
    scores = [e1 @ inp["protos"].T, e2 @ inp["protos"].T]
    codes = [sinkhorn(prototype_scores(e, inp["protos"]), 0.05, 3) for e in (e1, e2)]
    return swav_loss(scores, codes, 0.1), {"codes": torch.cat(codes, 1)}


def _dino(z1, z2, inp, mine):
    teacher = [inp["t1"][mine], inp["t2"][mine]]
    loss = dino_loss([z1, z2], teacher, inp["center"], 0.1, 0.04)
    return loss, {"center": updated_center(inp["center"], teacher, 0.9)}


def _lejepa(z1, z2, inp, mine):
    directions = random_directions(DIM, 16, torch.Generator().manual_seed(3), "cpu")
    return sigreg(torch.stack([z1, z2]), directions), {}


def _global_batchnorm(z1, z2, inp, mine):
    bn = distributed.convert_batchnorm(nn.BatchNorm1d(DIM), torch.device("cpu")).train()
    out = bn(z1)
    return (out * inp["keys"][mine]).sum() / BATCH * distributed.world_size() + z2.sum() * 0, {
        "running_var": bn.running_var, "running_mean": bn.running_mean}


CASES = {"simclr": _simclr, "moco_v3": _moco_v3, "barlow_twins": _barlow, "vicreg": _vicreg, "swav": _swav,
         "dino": _dino, "lejepa": _lejepa, "global_batchnorm": _global_batchnorm}


def run_cases() -> dict[str, torch.Tensor]:
    """For every case: this rank's loss, the encoder's (DDP-averaged) weight gradient, and the
    gradient of this rank's input slice."""
    inp = global_inputs()
    local = BATCH // distributed.world_size()
    mine = slice(distributed.rank() * local, (distributed.rank() + 1) * local)
    out = {}
    for name, case in CASES.items():
        torch.manual_seed(0)
        encoder = nn.Linear(DIM_IN, DIM)
        model = DistributedDataParallel(encoder) if distributed.active() else encoder
        x1 = inp["x1"][mine].clone().requires_grad_(True)
        x2 = inp["x2"][mine].clone().requires_grad_(True)
        z1, z2 = model(torch.cat([x1, x2])).chunk(2)
        loss, extra = case(z1, z2, inp, mine)
        loss.backward()
        out[f"{name}.loss"] = loss.detach().reshape(1)
        out[f"{name}.weight_grad"] = encoder.weight.grad
        out[f"{name}.input_grad"] = torch.cat([x1.grad, x2.grad], 1)
        out.update({f"{name}.{k}": v for k, v in extra.items()})
    torch.manual_seed(0)
    queue = FeatureQueue(12, DIM_IN)  # MoCo v2's negatives, NNCLR's support set: keys gathered before enqueue
    queue.push(inp["x1"][mine])
    queue.push(inp["x2"][mine])
    out["queue.items"], out["queue.ptr"] = queue.items, queue.ptr.reshape(1)
    return out
