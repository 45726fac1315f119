"""DINO (Caron et al., 2021, arXiv:2104.14294): a student matches the centred, sharpened output
of an EMA teacher across multi-crop views; the teacher sees only the global crops."""
from __future__ import annotations

import torch
from torch import nn

from core.augment import CropSpec, ViewConfig
from core.heads.dino import DINOHead
from core.losses.dino import dino_loss, updated_center
from core.methods.base import Method
from core.methods.multicrop import forward_crops, split_crops
from core.methods.registry import register
from core.methods.teacher import ema_momentum, ema_update, frozen_copy
from core.schedules import linear

# Two global crops (blur 1.0; blur 0.1 + solarize 0.2) and 8 local ones (96/224 px in the paper).
DINO_VIEWS = ViewConfig(crops=[
    CropSpec(count=1, size=1.0, scale=(0.4, 1.0), blur_p=1.0),
    CropSpec(count=1, size=1.0, scale=(0.4, 1.0), blur_p=0.1, solarize_p=0.2),
    CropSpec(count=8, size=0.5, scale=(0.05, 0.4), blur_p=0.5),
])


def teacher_temperature(step: int, total_steps: int, start: float, end: float, warmup_frac: float) -> float:
    """Linear warm-up of the teacher temperature from `start` to `end` over the first
    `warmup_frac` of training (30 of 100 epochs in the paper), then constant."""
    warmup = int(warmup_frac * total_steps)
    return linear(step, warmup, start, end) if warmup > 0 else end


@register("dino", family="distillation", default_backbone="vit_small", views=DINO_VIEWS, paper="arXiv:2104.14294",
          optimizer="adamw", weight_decay=0.04, grad_clip=3.0)
class DINO(Method):
    """`temperature` is the student's; the teacher's warms up from `warmup_teacher_temp` to
    `teacher_temp`. `momentum` is the teacher's EMA momentum at step 0 (cosine to 1).

    `head_batch_norm` is the official code's `use_bn_in_head` (on for its ResNet runs, off for
    ViT). It is on by default here: with narrow heads and no learning-rate warm-up, a ViT whose
    class tokens barely differ between images at initialisation lets the student collapse to one
    output within a few steps, and centering then flattens the teacher to uniform. Set it to
    False for the paper's ViT configuration."""

    def __init__(self, backbone, views, proj_hidden_dim: int = 2048, bottleneck_dim: int = 256,
                 out_dim: int = 65536, temperature: float = 0.1, teacher_temp: float = 0.07,
                 warmup_teacher_temp: float = 0.04, warmup_teacher_temp_frac: float = 0.3,
                 momentum: float = 0.996, center_momentum: float = 0.9, freeze_last_layer_frac: float = 0.01,
                 head_batch_norm: bool = True):
        super().__init__(backbone, views)
        self.head = DINOHead(backbone.feature_dim, proj_hidden_dim, bottleneck_dim, out_dim,
                             batch_norm=head_batch_norm)
        self.teacher_backbone = frozen_copy(backbone)
        self.teacher_head = frozen_copy(self.head)
        self.register_buffer("center", torch.zeros(out_dim))
        self.temperature, self.teacher_temp, self.warmup_teacher_temp = temperature, teacher_temp, warmup_teacher_temp
        self.warmup_teacher_temp_frac, self.momentum = warmup_teacher_temp_frac, momentum
        self.center_momentum, self.freeze_last_layer_frac = center_momentum, freeze_last_layer_frac

    def training_step(self, images, gen, step, total_steps):
        global_crops, local_crops = split_crops(self.views(images, gen))
        freeze_last = step < int(self.freeze_last_layer_frac * total_steps)
        features = forward_crops(self.backbone, global_crops + local_crops)
        # the head sees all crops as one batch, as in DINO's MultiCropWrapper
        student = self.head(torch.cat(features), freeze_last=freeze_last).chunk(len(features))
        with torch.no_grad():
            teacher = self.teacher_head(torch.cat(forward_crops(self.teacher_backbone, global_crops)))
            teacher = teacher.chunk(len(global_crops))
        temp = teacher_temperature(step, total_steps, self.warmup_teacher_temp, self.teacher_temp,
                                   self.warmup_teacher_temp_frac)
        loss = dino_loss(student, teacher, self.center, self.temperature, temp)
        self.center.copy_(updated_center(self.center, teacher, self.center_momentum))
        return loss, {"teacher_temp": temp}

    @torch.no_grad()
    def after_step(self, step, total_steps):
        momentum = ema_momentum(step, total_steps, self.momentum, 1.0)
        ema_update(self.teacher_backbone, self.backbone, momentum)
        ema_update(self.teacher_head, self.head, momentum)

    def parts(self):
        return {"backbone": self.teacher_backbone, "student": self.backbone,
                "heads": nn.ModuleDict({"student": self.head, "teacher": self.teacher_head})}
