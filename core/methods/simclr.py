"""SimCLR (Chen et al., 2020): two views, MLP projector, NT-Xent over the batch."""
from __future__ import annotations

from core.augment import CropSpec, ViewConfig
from core.heads import mlp
from core.losses.nt_xent import nt_xent
from core.methods.base import Method
from core.methods.registry import register
from core.methods.recipe import Recipe


SOLO = "solo-learn scripts/pretrain/cifar/simclr"
RECIPES = {
    "small": Recipe(
        backbone="resnet18", backbone_options={"small_stem": True},
        optimizer="lars", base_lr=0.4, batch_size=256, epochs=1000, warmup_epochs=10, weight_decay=1e-5,
        eta=0.02, clip_lr=True, exclude_bias_n_norm=True,
        method_options={"proj_hidden_dim": 2048, "proj_dim": 256, "temperature": 0.2},
        # colour distortion s = 1; no blur, which at 32 px wipes out most of the image (solo-learn's CIFAR runs)
        views=ViewConfig(crops=[CropSpec(count=2, scale=(0.08, 1.0), blur_p=0.0)], jitter_p=0.8, brightness=0.8,
                         contrast=0.8, saturation=0.8, hue=0.2, grayscale_p=0.2),
        sources={"backbone": f"{SOLO}.yaml (resnet18, CIFAR stem)",
                 "optimizer": f"{SOLO}.yaml (lars, eta 0.02, clip_lr, exclude_bias_n_norm)",
                 "base_lr": f"{SOLO}.yaml (lr 0.4, scaled by batch/256)", "batch_size": f"{SOLO}.yaml",
                 "epochs": f"{SOLO}.yaml (max_epochs 1000)", "warmup_epochs": "solo-learn warmup_cosine default (10)",
                 "weight_decay": f"{SOLO}.sh (1e-5)",
                 "method_options": f"{SOLO}.yaml (proj 2048 -> 256, temperature 0.2)",
                 "views": f"solo-learn cifar augmentations/symmetric.yaml; blur 0.0 from {SOLO}.sh"},
        notes="Weight decay 1e-5 and no blur follow solo-learn's cifar simclr.sh, the run behind its published "
              "CIFAR numbers; the later simclr.yaml / symmetric.yaml say 1e-4 and blur p 0.5."),
    "large": Recipe(
        backbone="resnet50", backbone_options={"small_stem": False},
        optimizer="lars", base_lr=0.3, batch_size=256, epochs=100, warmup_epochs=10, weight_decay=1e-6,
        eta=0.001, clip_lr=False, exclude_bias_n_norm=True,
        method_options={"proj_hidden_dim": 2048, "proj_dim": 128, "temperature": 0.1},
        # s = 1 colour distortion, blur p 0.5 on both views, crops of 8-100 % (appendix A)
        views=ViewConfig(crops=[CropSpec(count=2, scale=(0.08, 1.0), blur_p=0.5)], jitter_p=0.8, brightness=0.8,
                         contrast=0.8, saturation=0.8, hue=0.2, grayscale_p=0.2),
        sources={"backbone": "paper sec. 2.3, default setting (ResNet-50)",
                 "optimizer": "paper sec. 2.3 (LARS); google-research/simclr lars_optimizer.py (eeta 0.001, "
                              "biases and BN excluded from adaptation and decay)",
                 "base_lr": "paper sec. 2.3 (4.8 = 0.3 x BatchSize/256); simclr run.py learning_rate 0.3, linear",
                 "epochs": "paper sec. 2.3 (100 epochs); simclr run.py train_epochs 100",
                 "warmup_epochs": "paper sec. 2.3 (10 epochs, then cosine); simclr run.py warmup_epochs 10",
                 "weight_decay": "paper sec. 2.3 (1e-6); simclr run.py weight_decay 1e-6",
                 "method_options": "paper sec. 2.3 (2-layer head to 128-d); simclr run.py temperature 0.1",
                 "views": "paper appendix A (crop 0.08-1, colour jitter s=1 p 0.8, grey 0.2, blur p 0.5)"},
        notes="Batch 256 instead of the paper's 4096 (one accelerator); the LR follows the linear rule. The paper "
              "tunes temperature 0.1 at large batches: at 256 the contrast has 16x fewer negatives."),
}


@register("simclr", family="contrastive", recipes=RECIPES, paper="arXiv:2002.05709")
class SimCLR(Method):
    bf16_params_ok = True  # no EMA target, no state changed outside the optimiser (Method)
    def __init__(self, backbone, views, proj_hidden_dim: int = 2048, proj_dim: int = 128, temperature: float = 0.1):
        super().__init__(backbone, views)
        self.projector = mlp(backbone.feature_dim, proj_hidden_dim, proj_dim)
        self.temperature = temperature

    def training_step(self, images, gen, step, total_steps):
        v1, v2 = self.views(images, gen)[:2]
        z1, z2 = self.projector(self.backbone(v1)), self.projector(self.backbone(v2))
        return nt_xent(z1, z2, self.temperature), {}

    def parts(self):
        return {"backbone": self.backbone, "heads": self.projector}
