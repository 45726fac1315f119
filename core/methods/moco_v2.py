"""MoCo v2 (Chen et al., 2020, arXiv:2003.04297; MoCo: He et al., arXiv:1911.05722): a query
encoder with an MLP head, a momentum key encoder, and a queue of past keys as negatives."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from core.augment import MOCO_V2_VIEWS, CropSpec, ViewConfig
from core.heads import mlp
from core.losses.infonce import info_nce
from core.methods.base import Method
from core.methods.feature_queue import FeatureQueue
from core.methods.momentum import ema_update, frozen_copy, momentum_at
from core.methods.registry import register
from core.methods.recipe import Recipe


SOLO = "solo-learn scripts/pretrain/cifar/mocov2plus"
RECIPES = {
    "small": Recipe(
        backbone="resnet18", backbone_options={"small_stem": True},
        optimizer="sgd", base_lr=0.3, batch_size=256, epochs=1000, warmup_epochs=10, weight_decay=1e-4,
        method_options={"proj_hidden_dim": 2048, "proj_dim": 256, "queue_size": 32768, "temperature": 0.2,
                        "momentum": 0.99, "final_momentum": 0.999, "head_batch_norm": False},
        # MoCo v2's jitter (saturation 0.4); no blur at 32 px
        views=ViewConfig(crops=[CropSpec(count=2, scale=(0.08, 1.0), blur_p=0.0)], jitter_p=0.8, brightness=0.4,
                         contrast=0.4, saturation=0.4, hue=0.1, grayscale_p=0.2),
        sources={"backbone": f"{SOLO}.yaml (resnet18, CIFAR stem)", "optimizer": f"{SOLO}.yaml (sgd, momentum 0.9)",
                 "base_lr": f"{SOLO}.yaml (lr 0.3, scaled by batch/256)", "batch_size": f"{SOLO}.yaml",
                 "epochs": f"{SOLO}.yaml (max_epochs 1000)", "warmup_epochs": "solo-learn warmup_cosine default (10)",
                 "weight_decay": f"{SOLO}.yaml (1e-4)",
                 "method_options": f"{SOLO}.yaml (proj 2048 -> 256 without BN, queue 32768, temperature 0.2, "
                                   "base_tau 0.99, final_tau 0.999)",
                 "views": f"solo-learn cifar augmentations/symmetric_weak.yaml; blur 0.0 from {SOLO}.sh"},
        notes="No blur as in mocov2plus.sh (symmetric_weak.yaml has p 0.5). Projector without BatchNorm "
              "as solo-learn's: the loss sits near chance for the first few hundred steps."),
    "large": Recipe(
        backbone="resnet50", backbone_options={"small_stem": False},
        optimizer="sgd", base_lr=0.03, batch_size=256, epochs=200, warmup_epochs=0, weight_decay=1e-4,
        method_options={"proj_hidden_dim": 2048, "proj_dim": 128, "queue_size": 65536, "temperature": 0.2,
                        "momentum": 0.999, "final_momentum": 0.999, "head_batch_norm": False},
        views=MOCO_V2_VIEWS,
        sources={"backbone": "facebookresearch/moco README (ResNet-50)",
                 "optimizer": "moco main_moco.py (SGD, momentum 0.9)",
                 "base_lr": "moco README, MoCo v2 (--lr 0.03 --batch-size 256 --cos)",
                 "batch_size": "moco README (256 on 8 GPUs)", "epochs": "moco README / paper table 1 (200 epochs)",
                 "warmup_epochs": "paper sec. 2 / main_moco.py --cos (cosine, no warm-up)",
                 "weight_decay": "moco main_moco.py (1e-4)",
                 "method_options": "main_moco.py (--moco-k 65536, --moco-m 0.999 held constant, --moco-dim 128, "
                                   "--mlp 2048 without BN); paper sec. 2 (--moco-t 0.2)",
                 "views": "paper sec. 2 / main_moco.py --aug-plus (crop 0.2-1, jitter 0.4/0.4/0.4/0.1 p 0.8, "
                          "grey 0.2, blur p 0.5)"},
        notes="The loss is symmetrised with one queue of 65536 keys per view (solo-learn's mocov2plus), where "
              "the reference computes one direction and keeps one queue: each query meets as many negatives "
              "from as many past images as the reference's."),
}


@register("moco_v2", family="contrastive", recipes=RECIPES, paper="arXiv:2003.04297")
class MoCoV2(Method):
    """The loss is symmetrised (each view is a query for the other's key), with one queue per
    view as solo-learn's mocov2plus: view 1's query meets view 2's key against past view-2 keys,
    and the other way round. The key encoder's momentum goes from `momentum` to
    `final_momentum` on a cosine (equal: held constant, as the MoCo reference).
    `head_batch_norm` puts BatchNorm in the projector's hidden layer, as MoCo v3 and SimCLR do;
    the MoCo v2 reference head has none (set it False), which on small data leaves all keys
    nearly parallel and the loss at chance for the first hundreds of steps."""

    def __init__(self, backbone, views, proj_hidden_dim: int = 2048, proj_dim: int = 128, queue_size: int = 65536,
                 temperature: float = 0.2, momentum: float = 0.99, final_momentum: float = 1.0,
                 head_batch_norm: bool = True):
        super().__init__(backbone, views)
        self.projector = mlp(backbone.feature_dim, proj_hidden_dim, proj_dim, batch_norm=head_batch_norm)
        self.momentum_backbone = frozen_copy(backbone)
        self.momentum_projector = frozen_copy(self.projector)
        self.queues = nn.ModuleList(FeatureQueue(queue_size, proj_dim) for _ in range(2))  # view 1's, view 2's keys
        self.temperature, self.momentum, self.final_momentum = temperature, momentum, final_momentum

    def training_step(self, images, gen, step, total_steps):
        v1, v2 = self.views(images, gen)[:2]
        q1, q2 = self.projector(self.backbone(v1)), self.projector(self.backbone(v2))
        with torch.no_grad():
            k1 = self.momentum_projector(self.momentum_backbone(v1))
            k2 = self.momentum_projector(self.momentum_backbone(v2))
        keys1, keys2 = (queue.items.clone() for queue in self.queues)  # the pushes below must not change them
        loss = (info_nce(q1, k2, keys2, self.temperature) + info_nce(q2, k1, keys1, self.temperature)) / 2
        for queue, k in zip(self.queues, (k1, k2)):
            queue.push(F.normalize(k, dim=1))
        return loss, {"momentum": momentum_at(step, total_steps, self.momentum, self.final_momentum)}

    @torch.no_grad()
    def after_step(self, step, total_steps):
        m = momentum_at(step, total_steps, self.momentum, self.final_momentum)
        ema_update(self.momentum_backbone, self.backbone, m)
        ema_update(self.momentum_projector, self.projector, m)

    def parts(self):
        # Downstream, MoCo uses the query encoder (the reference code's encoder_q).
        return {"backbone": self.backbone, "teacher": self.momentum_backbone,
                "heads": nn.ModuleDict({"projector": self.projector, "momentum_projector": self.momentum_projector})}
