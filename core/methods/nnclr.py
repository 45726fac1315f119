"""NNCLR (Dwibedi et al., 2021, arXiv:2104.14548): each projection's nearest neighbour in a
support set of past projections is the positive for the other view's prediction."""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from core.augment import BYOL_VIEWS, CIFAR_ASYMMETRIC_VIEWS
from core.heads import mlp
from core.losses.infonce import info_nce
from core.methods.base import Method
from core.methods.feature_queue import FeatureQueue
from core.methods.registry import register
from core.methods.recipe import Recipe


def nearest_neighbour(z: Tensor, support: Tensor) -> Tensor:
    """z: (batch, dim), support: (size, dim), both L2-normalised. Returns (batch, dim): for each
    row of z the support row of highest cosine similarity (no gradient flows through it)."""
    return support[(z @ support.T).argmax(dim=1)]


SOLO = "solo-learn scripts/pretrain/cifar/nnclr"
RECIPES = {
    "small": Recipe(
        backbone="resnet18", backbone_options={"small_stem": True},
        optimizer="lars", base_lr=0.4, batch_size=256, epochs=1000, warmup_epochs=10, weight_decay=1e-5,
        eta=0.02, clip_lr=True, exclude_bias_n_norm=True,
        method_options={"proj_hidden_dim": 2048, "proj_dim": 256, "pred_hidden_dim": 4096, "support_size": 65536,
                        "temperature": 0.2},
        # BYOL's asymmetric pair without blur (32 px): solarisation 0.2 on the second view only
        views=CIFAR_ASYMMETRIC_VIEWS,
        sources={"backbone": f"{SOLO}.yaml (resnet18, CIFAR stem)",
                 "optimizer": f"{SOLO}.yaml (lars, eta 0.02, clip_lr, exclude_bias_n_norm)",
                 "base_lr": f"{SOLO}.yaml (lr 0.4, scaled by batch/256)", "batch_size": f"{SOLO}.yaml",
                 "epochs": f"{SOLO}.yaml (max_epochs 1000)", "warmup_epochs": "solo-learn warmup_cosine default (10)",
                 "weight_decay": f"{SOLO}.yaml (1e-5)",
                 "method_options": f"{SOLO}.yaml (proj 2048 -> 256, pred 4096, queue_size 65536, temperature 0.2)",
                 "views": "solo-learn cifar augmentations/asymmetric.yaml"},
        notes="Temperature 0.2 and a 65,536-entry support set (solo-learn's CIFAR values; the paper: 0.1 and "
              "98,304 at batch 4096)."),
    "large": Recipe(
        backbone="resnet50", backbone_options={"small_stem": False},
        optimizer="lars", base_lr=0.3, batch_size=256, epochs=1000, warmup_epochs=10, weight_decay=1e-6,
        eta=0.001, clip_lr=False, exclude_bias_n_norm=True,
        method_options={"proj_hidden_dim": 2048, "proj_dim": 256, "pred_hidden_dim": 4096, "support_size": 98304,
                        "temperature": 0.1},
        views=BYOL_VIEWS,
        sources={"backbone": "paper sec. 4 (ResNet-50)",
                 "optimizer": "paper sec. 4 (LARS, cosine schedule); eta 0.001 as in the SimCLR / BYOL code",
                 "base_lr": "SimCLR's ImageNet setting (0.3 x BatchSize/256), not checked against NNCLR's text",
                 "epochs": "paper sec. 4 (1000 epochs, batch 4096)", "warmup_epochs": "paper sec. 4 (10 epochs)",
                 "weight_decay": "SimCLR's ImageNet setting (1e-6), not checked against NNCLR's text",
                 "method_options": "paper sec. 3-4 (3-layer projector 2048 -> 256, 2-layer predictor 4096, "
                                   "support set 98,304, temperature 0.1)",
                 "views": "paper sec. 4 (BYOL's augmentations)"},
        notes="Batch 256 instead of 4096 (one accelerator), LR by the linear rule. NNCLR has no public reference "
              "code: LR and weight decay are SimCLR's ImageNet values, which NNCLR builds on."),
}


@register("nnclr", family="contrastive", recipes=RECIPES, paper="arXiv:2104.14548")
class NNCLR(Method):
    def __init__(self, backbone, views, proj_hidden_dim: int = 2048, proj_dim: int = 256, pred_hidden_dim: int = 4096,
                 support_size: int = 98304, temperature: float = 0.1):
        super().__init__(backbone, views)
        self.projector = mlp(backbone.feature_dim, proj_hidden_dim, proj_dim, layers=3, last_bn=True)
        self.predictor = mlp(proj_dim, pred_hidden_dim, proj_dim)
        self.support = FeatureQueue(support_size, proj_dim)
        self.temperature = temperature

    def training_step(self, images, gen, step, total_steps):
        v1, v2 = self.views(images, gen)[:2]
        z1, z2 = self.projector(self.backbone(v1)), self.projector(self.backbone(v2))
        p1, p2 = self.predictor(z1), self.predictor(z2)
        z1, z2 = F.normalize(z1, dim=1), F.normalize(z2, dim=1)
        support = self.support.items.clone()  # the push below must not change what the loss saw
        nn1, nn2 = nearest_neighbour(z1.detach(), support), nearest_neighbour(z2.detach(), support)
        # Eq. 2, symmetrised: NN(z1) against the predictions of view 2, and vice versa.
        loss = (info_nce(nn1, p2, temperature=self.temperature) + info_nce(nn2, p1, temperature=self.temperature)) / 2
        self.support.push(z1)
        return loss, {}

    def parts(self):
        return {"backbone": self.backbone, "heads": nn.ModuleDict({"projector": self.projector,
                                                                   "predictor": self.predictor})}
