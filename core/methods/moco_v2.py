"""MoCo v2 (Chen et al., 2020, arXiv:2003.04297; MoCo: He et al., arXiv:1911.05722): a query
encoder with an MLP head, a momentum key encoder, and a queue of past keys as negatives."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from core.augment import CropSpec, ViewConfig
from core.heads import mlp
from core.losses.infonce import info_nce
from core.methods.base import Method
from core.methods.feature_queue import FeatureQueue
from core.methods.momentum import ema_update, frozen_copy, momentum_at
from core.methods.registry import register

# MoCo v2 augmentation: SimCLR's crops and colour distortion plus blur with p=0.5.
VIEWS = ViewConfig(crops=[CropSpec(count=2, scale=(0.2, 1.0), blur_p=0.5)], brightness=0.4, contrast=0.4,
                   saturation=0.4, hue=0.1)


@register("moco_v2", family="contrastive", default_backbone="resnet18", views=VIEWS, paper="arXiv:2003.04297")
class MoCoV2(Method):
    """The loss is symmetrised (each view is a query for the other's key) and both views' keys
    are enqueued; the key encoder's momentum rises from `momentum` to 1 on a cosine.
    `head_batch_norm` puts BatchNorm in the projector's hidden layer, as MoCo v3 and SimCLR do;
    the MoCo v2 reference head has none (set it False), which on small data leaves all keys
    nearly parallel and the loss at chance for the first hundreds of steps."""

    def __init__(self, backbone, views, proj_hidden_dim: int = 2048, proj_dim: int = 128, queue_size: int = 65536,
                 temperature: float = 0.2, momentum: float = 0.99, head_batch_norm: bool = True):
        super().__init__(backbone, views)
        self.projector = mlp(backbone.feature_dim, proj_hidden_dim, proj_dim, batch_norm=head_batch_norm)
        self.momentum_backbone = frozen_copy(backbone)
        self.momentum_projector = frozen_copy(self.projector)
        self.queue = FeatureQueue(queue_size, proj_dim)
        self.temperature, self.momentum = temperature, momentum

    def training_step(self, images, gen, step, total_steps):
        v1, v2 = self.views(images, gen)[:2]
        q1, q2 = self.projector(self.backbone(v1)), self.projector(self.backbone(v2))
        with torch.no_grad():
            k1 = self.momentum_projector(self.momentum_backbone(v1))
            k2 = self.momentum_projector(self.momentum_backbone(v2))
        negatives = self.queue.items.clone()  # the push below must not change what the loss saw
        loss = (info_nce(q1, k2, negatives, self.temperature) + info_nce(q2, k1, negatives, self.temperature)) / 2
        self.queue.push(F.normalize(torch.cat([k1, k2]), dim=1))
        return loss, {"momentum": momentum_at(step, total_steps, self.momentum)}

    @torch.no_grad()
    def after_step(self, step, total_steps):
        m = momentum_at(step, total_steps, self.momentum)
        ema_update(self.momentum_backbone, self.backbone, m)
        ema_update(self.momentum_projector, self.projector, m)

    def parts(self):
        # Downstream, MoCo uses the query encoder (the reference code's encoder_q).
        return {"backbone": self.backbone, "momentum": self.momentum_backbone,
                "heads": nn.ModuleDict({"projector": self.projector, "momentum_projector": self.momentum_projector})}
