"""SimSiam (Chen & He, 2020, arXiv:2011.10566): a Siamese encoder whose predictor matches the
other view's projection under a stop-gradient; no negatives, no momentum encoder."""
from __future__ import annotations

from torch import nn

from core.augment import MOCO_V2_VIEWS, CropSpec, ViewConfig
from core.heads import mlp
from core.losses.simsiam import negative_cosine
from core.methods.base import Method
from core.methods.registry import register
from core.methods.recipe import Recipe


SOLO = "solo-learn scripts/pretrain/cifar/simsiam"
RECIPES = {
    "small": Recipe(
        backbone="resnet18", backbone_options={"small_stem": True},
        optimizer="sgd", base_lr=0.5, batch_size=256, epochs=1000, warmup_epochs=10, weight_decay=1e-5,
        method_options={"proj_hidden_dim": 2048, "proj_dim": 2048, "pred_hidden_dim": 512},
        lr_groups={"predictor": {"fixed_lr": True}},
        # MoCo v2's jitter (saturation 0.4); no blur at 32 px
        views=ViewConfig(crops=[CropSpec(count=2, scale=(0.08, 1.0), blur_p=0.0)], jitter_p=0.8, brightness=0.4,
                         contrast=0.4, saturation=0.4, hue=0.1, grayscale_p=0.2),
        sources={"backbone": f"{SOLO}.yaml (resnet18, CIFAR stem)", "optimizer": f"{SOLO}.yaml (sgd, momentum 0.9)",
                 "base_lr": f"{SOLO}.yaml (lr 0.5, scaled by batch/256)", "batch_size": f"{SOLO}.yaml",
                 "epochs": f"{SOLO}.yaml (max_epochs 1000)", "warmup_epochs": "solo-learn warmup_cosine default (10)",
                 "weight_decay": f"{SOLO}.yaml (1e-5)",
                 "method_options": f"{SOLO}.yaml (proj 2048 -> 2048, pred 512)",
                 "lr_groups": "solo-learn simsiam.py learnable_params (predictor static_lr: the scaled LR at "
                              "every step, warm-up included)",
                 "views": f"solo-learn cifar augmentations/symmetric_weak.yaml; blur 0.0 from {SOLO}.sh"},
        notes="The predictor keeps the peak LR at every step (solo-learn's static_lr, the reference's "
              "--fix-pred-lr). No blur as in simsiam.sh (symmetric_weak.yaml has p 0.5)."),
    "large": Recipe(
        backbone="resnet50", backbone_options={"small_stem": False},
        optimizer="sgd", base_lr=0.05, batch_size=256, epochs=100, warmup_epochs=0, weight_decay=1e-4,
        method_options={"proj_hidden_dim": 2048, "proj_dim": 2048, "pred_hidden_dim": 512},
        lr_groups={"predictor": {"fixed_lr": True}},
        views=MOCO_V2_VIEWS,
        sources={"backbone": "facebookresearch/simsiam README (ResNet-50)",
                 "optimizer": "paper sec. 3, baseline settings / main_simsiam.py (SGD, momentum 0.9)",
                 "base_lr": "paper sec. 3 (lr x BatchSize/256, base lr 0.05); main_simsiam.py --lr 0.05",
                 "epochs": "paper sec. 3, baseline settings / main_simsiam.py (100 epochs)",
                 "warmup_epochs": "paper sec. 3 / main_simsiam.py (cosine decay, no warm-up)",
                 "weight_decay": "paper sec. 3, baseline settings / main_simsiam.py (1e-4)",
                 "method_options": "paper sec. 3 (projector 3 layers of 2048, predictor 2048 -> 512 -> 2048)",
                 "lr_groups": "main_simsiam.py --fix-pred-lr (the README's 100-epoch runs; the predictor's "
                              "param group keeps init_lr)",
                 "views": "main_simsiam.py (MoCo v2's: crop 0.2-1, jitter 0.4/0.4/0.4/0.1 p 0.8, grey 0.2, "
                          "blur p 0.5)"},
        notes="Batch 256 instead of 512, LR by the linear rule. The predictor keeps the peak LR (--fix-pred-lr)."),
}


@register("simsiam", family="self-distillation", recipes=RECIPES, paper="arXiv:2011.10566")
class SimSiam(Method):
    """A 3-layer projector ending in BatchNorm and a bottleneck predictor (2048-512-2048)."""
    bf16_params_ok = True  # no EMA target, no state changed outside the optimiser (Method)

    def __init__(self, backbone, views, proj_hidden_dim: int = 2048, proj_dim: int = 2048, pred_hidden_dim: int = 512):
        super().__init__(backbone, views)
        self.projector = mlp(backbone.feature_dim, proj_hidden_dim, proj_dim, layers=3, last_bn=True)
        self.predictor = mlp(proj_dim, pred_hidden_dim, proj_dim)

    def training_step(self, images, gen, step, total_steps):
        v1, v2 = self.views(images, gen)[:2]
        z1, z2 = self.projector(self.backbone(v1)), self.projector(self.backbone(v2))
        p1, p2 = self.predictor(z1), self.predictor(z2)
        loss = negative_cosine(p1, z2) / 2 + negative_cosine(p2, z1) / 2  # eq. 2
        return loss, {}

    def parts(self):
        return {"backbone": self.backbone, "heads": nn.ModuleDict({"projector": self.projector,
                                                                   "predictor": self.predictor})}
