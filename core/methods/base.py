"""The small interface every method implements; the shared work lives in core/train.py."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from core.augment import ViewMaker


class Method(nn.Module):
    """A method owns its backbone, heads and state (EMA targets, queues, centers) as modules and
    buffers, so `state_dict()` is everything needed to resume exactly."""

    name = ""
    # True where some trainable parameter gets no gradient in some steps (SwAV's frozen prototypes):
    # DDP then searches the graph for them every step, which costs a traversal, so it is opt-in
    unused_parameters = False
    # True where bf16 parameters with fp32 master weights (TrainConfig.param_dtype "bf16", core/masters.py)
    # train the method as fp32 parameters would: every trained tensor is changed by the optimiser alone.
    # An EMA target (BYOL, DINO, MoCo, data2vec, I-JEPA) lerps towards the bf16 online weights with
    # 1 - momentum ~ 1e-3, below bf16's resolution (2^-8), and would be fp32 state fed from rounded
    # weights; prototypes normalised in after_step (SwAV) would be overwritten by the masters. So an
    # allow-list: methods whose whole state is the optimiser's parameters opt in.
    bf16_params_ok = False

    def __init__(self, backbone: nn.Module, views: ViewMaker):
        super().__init__()
        self.backbone = backbone
        self.views = views

    def training_step(self, images: Tensor, gen: torch.Generator, step: int, total_steps: int) -> tuple[Tensor, dict]:
        """images: (B, C, H, W) uint8 on the training device. Returns (loss, logs of floats)."""
        raise NotImplementedError

    @torch.no_grad()
    def after_step(self, step: int, total_steps: int) -> None:
        """Called after each optimiser step (EMA updates, prototype normalisation)."""

    def parts(self) -> dict[str, nn.Module]:
        """Checkpoint parts. 'backbone' is what users take downstream: a teacher/target encoder
        when the method has one. 'teacher' names the momentum/EMA encoder where there is one
        (the same module as 'backbone' for BYOL, DINO, data2vec, I-JEPA; saved once). Every
        other entry is saved as its own part too."""
        return {"backbone": self.backbone}

    def downstream_encoder(self) -> nn.Module:
        return self.parts()["backbone"]
