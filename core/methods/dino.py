"""DINO (Caron et al., 2021, arXiv:2104.14294): a student matches the centred, sharpened output
of an EMA teacher across multi-crop views; the teacher sees only the global crops."""
from __future__ import annotations

import torch
from torch import nn

from core.augment import CIFAR_ASYMMETRIC_VIEWS, CropSpec, ViewConfig
from core.backbones.vit import without_drop_path
from core.heads.dino import DINOHead
from core.losses.dino import dino_loss, updated_center
from core.methods.base import Method
from core.methods.multicrop import forward_crops, split_crops
from core.methods.registry import register
from core.methods.momentum import ema_update, frozen_copy, momentum_at
from core.methods.recipe import Recipe
from core.schedules import linear

# Two global crops (blur 1.0; blur 0.1 + solarize 0.2) and 8 local ones of 96 px at 224 (the paper's).
DINO_VIEWS = ViewConfig(crops=[
    CropSpec(count=1, size=1.0, scale=(0.4, 1.0), blur_p=1.0),
    CropSpec(count=1, size=1.0, scale=(0.4, 1.0), blur_p=0.1, solarize_p=0.2),
    CropSpec(count=8, size=96 / 224, scale=(0.05, 0.4), blur_p=0.5),
])


def teacher_temperature(step: int, warmup_steps: int, start: float, end: float) -> float:
    """Linear warm-up of the teacher temperature from `start` to `end` over the first
    `warmup_steps` (30 epochs in the paper, whatever the run's length), then constant."""
    return linear(step, warmup_steps, start, end) if warmup_steps > 0 else end


SOLO = "solo-learn scripts/pretrain/cifar/dino"
RECIPES = {
    "small": Recipe(
        backbone="resnet18", backbone_options={"small_stem": True},
        optimizer="lars", base_lr=0.3, batch_size=256, epochs=1000, warmup_epochs=10, weight_decay=1e-6,
        eta=0.02, clip_lr=True, exclude_bias_n_norm=True, freeze_last_layer_epochs=1,
        method_options={"proj_hidden_dim": 2048, "bottleneck_dim": 256, "out_dim": 4096, "temperature": 0.1,
                        "teacher_temp": 0.07, "warmup_teacher_temp": 0.04, "warmup_teacher_temp_steps": 0,
                        "momentum": 0.9995, "center_momentum": 0.9, "head_batch_norm": False},
        # two 32-px crops, BYOL's asymmetric pair without blur (32 px); no local crops
        views=CIFAR_ASYMMETRIC_VIEWS,
        sources={"backbone": f"{SOLO}.yaml (resnet18, CIFAR stem)",
                 "optimizer": f"{SOLO}.yaml (lars, eta 0.02, clip_lr, exclude_bias_n_norm)",
                 "base_lr": f"{SOLO}.yaml (lr 0.3, scaled by batch/256)", "batch_size": f"{SOLO}.yaml",
                 "epochs": f"{SOLO}.yaml (max_epochs 1000)", "warmup_epochs": "solo-learn warmup_cosine default (10)",
                 "weight_decay": f"{SOLO}.yaml (1e-6)",
                 "freeze_last_layer_epochs": "solo-learn dino.py default (freeze_last_layer 1)",
                 "grad_clip": "solo-learn dino.py default (clip_grad 0: none)",
                 "method_options": f"{SOLO}.yaml (proj 2048 -> 256, num_prototypes 4096, tau 0.9995 -> 1); "
                                   "solo-learn dino.py defaults (student 0.1, teacher 0.04 -> 0.07 over 0 epochs, "
                                   "no BN in head)",
                 "views": "solo-learn cifar augmentations/asymmetric.yaml (2 crops of 32 px)"},
        notes="solo-learn's CIFAR DINO is a ResNet-18 with LARS on two 32-px crops (no multi-crop); followed "
              "here. The teacher temperature is 0.07 throughout (solo-learn's current default; its older "
              "argparse default warmed it up from 0.04 over 50 epochs)."),
    "large": Recipe(
        backbone="vit_small", backbone_options={"patch_size": 16, "drop_path_rate": 0.1},
        optimizer="adamw", base_lr=0.0005, batch_size=256, epochs=100, warmup_epochs=10, final_lr=1e-6,
        weight_decay=0.04, final_weight_decay=0.4, betas=(0.9, 0.999), grad_clip=3.0, grad_clip_mode="per_parameter",
        freeze_last_layer_epochs=1,
        method_options={"proj_hidden_dim": 2048, "bottleneck_dim": 256, "out_dim": 65536, "temperature": 0.1,
                        "teacher_temp": 0.07, "warmup_teacher_temp": 0.04,
                        "momentum": 0.996, "center_momentum": 0.9, "head_batch_norm": False},
        epoch_options={"warmup_teacher_temp_steps": 30},
        views=DINO_VIEWS,
        sources={"backbone": "facebookresearch/dino README (ViT-S/16); main_dino.py --drop_path_rate 0.1 in the "
                             "student only (the teacher is built without it)",
                 "optimizer": "dino main_dino.py (--optimizer adamw, torch AdamW betas)",
                 "base_lr": "main_dino.py (--lr 0.0005, x batch/256)",
                 "batch_size": "main_dino.py (--batch_size_per_gpu 64; 1024 on 16 GPUs in the README)",
                 "epochs": "main_dino.py (--epochs 100)", "warmup_epochs": "main_dino.py (--warmup_epochs 10)",
                 "final_lr": "main_dino.py (--min_lr 1e-6)", "weight_decay": "main_dino.py (--weight_decay 0.04)",
                 "final_weight_decay": "main_dino.py (--weight_decay_end 0.4, cosine)",
                 "grad_clip": "main_dino.py (--clip_grad 3.0; utils.clip_gradients clips each tensor)",
                 "freeze_last_layer_epochs": "main_dino.py (--freeze_last_layer 1)",
                 "method_options": "main_dino.py (--out_dim 65536, --use_bn_in_head False, --momentum_teacher "
                                   "0.996, center_momentum 0.9); paper sec. 4 / appendix (student 0.1, teacher "
                                   "0.04 -> 0.07)",
                 "epoch_options": "main_dino.py --warmup_teacher_temp_epochs 30 (absolute epochs)",
                 "views": "main_dino.py DataAugmentationDINO (global 224 px of 0.4-1 with blur 1.0 / 0.1 + "
                          "solarise 0.2, 8 local of 96 px, 0.05-0.4, with blur 0.5)"},
        notes="Batch 256 instead of 1024, LR by the linear rule. Local crops are 96/224 of the input side (96 px "
              "at 224); at other sides the ViT's patch grid drops the pixels beyond the last whole patch. The "
              "final LR scales with the LR (the code keeps min_lr 1e-6 whatever the batch)."),
}


@register("dino", family="self-distillation", recipes=RECIPES, paper="arXiv:2104.14294")
class DINO(Method):
    """`temperature` is the student's; the teacher's warms up from `warmup_teacher_temp` to
    `teacher_temp` over `warmup_teacher_temp_steps` (the recipe gives epochs; the resolver
    converts them). `momentum` is the teacher's EMA momentum at step 0 (cosine to 1).

    `head_batch_norm` is the official code's `use_bn_in_head`: off, as in its ViT configuration
    (on for its ResNet runs). The head's `last_layer` stays fixed for the recipe's first steps:
    the training loop drops the gradient of every parameter named "last_layer" (the official
    `cancel_gradients_last_layer`), so the method needs no option for it."""

    def __init__(self, backbone, views, proj_hidden_dim: int = 2048, bottleneck_dim: int = 256,
                 out_dim: int = 65536, temperature: float = 0.1, teacher_temp: float = 0.07,
                 warmup_teacher_temp: float = 0.04, warmup_teacher_temp_steps: int = 0,
                 momentum: float = 0.996, center_momentum: float = 0.9, head_batch_norm: bool = False):
        super().__init__(backbone, views)
        self.head = DINOHead(backbone.feature_dim, proj_hidden_dim, bottleneck_dim, out_dim,
                             batch_norm=head_batch_norm)
        self.teacher_backbone = without_drop_path(frozen_copy(backbone))
        self.teacher_head = frozen_copy(self.head)
        self.register_buffer("center", torch.zeros(out_dim))
        self.temperature, self.teacher_temp, self.warmup_teacher_temp = temperature, teacher_temp, warmup_teacher_temp
        self.warmup_teacher_temp_steps, self.momentum = warmup_teacher_temp_steps, momentum
        self.center_momentum = center_momentum

    def training_step(self, images, gen, step, total_steps):
        global_crops, local_crops = split_crops(self.views(images, gen))
        features = forward_crops(self.backbone, global_crops + local_crops)
        # the head sees all crops as one batch, as in DINO's MultiCropWrapper
        student = self.head(torch.cat(features)).chunk(len(features))
        with torch.no_grad():
            teacher = self.teacher_head(torch.cat(forward_crops(self.teacher_backbone, global_crops)))
            teacher = teacher.chunk(len(global_crops))
        temp = teacher_temperature(step, self.warmup_teacher_temp_steps, self.warmup_teacher_temp, self.teacher_temp)
        loss = dino_loss(student, teacher, self.center, self.temperature, temp)
        self.center.copy_(updated_center(self.center, teacher, self.center_momentum))
        return loss, {"teacher_temp": temp}

    @torch.no_grad()
    def after_step(self, step, total_steps):
        momentum = momentum_at(step, total_steps, self.momentum, 1.0)
        ema_update(self.teacher_backbone, self.backbone, momentum)
        ema_update(self.teacher_head, self.head, momentum)

    def parts(self):
        return {"backbone": self.teacher_backbone, "teacher": self.teacher_backbone, "student": self.backbone,
                "heads": nn.ModuleDict({"student": self.head, "teacher": self.teacher_head})}
