"""data2vec for images (Baevski et al., 2022, arXiv:2202.03555): the student ViT sees the image with
60% of its patches (BEiT block-wise masking) replaced by a learned mask token; an EMA teacher sees
the full image; targets are the average of the teacher's top-K block outputs, each normalised over
its features without parameters; a linear head regresses them at the masked positions (smooth L1,
beta 2, summed over features and scaled by 1/sqrt(D) as in the paper's code).

Checkpoint "backbone" is the EMA teacher (the encoder we hand out for frozen features); the paper
fine-tunes the student, saved as the "student" part. Targets use each block's output (after its
residual) rather than the FFN output before the last residual."""
from __future__ import annotations

import torch
from torch import nn

from core.augment import CropSpec, ViewConfig
from core.augment.masks import block_mask
from core.losses.latent import latent_regression, top_k_average
from core.methods.base import Method
from core.methods.ema_target import ema_update, frozen_copy
from core.methods.registry import register
from core.schedules import linear

# BEiT's pre-training augmentation, as data2vec: random resized crop, flip, colour jitter.
DATA2VEC_VIEWS = ViewConfig(crops=[CropSpec(count=1, size=1.0, scale=(0.08, 1.0))], jitter_p=0.8,
                            brightness=0.4, contrast=0.4, saturation=0.4, hue=0.0, grayscale_p=0.0)


@register("data2vec", family="latent-prediction", default_backbone="vit_tiny", views=DATA2VEC_VIEWS,
          paper="arXiv:2202.03555", optimizer="adamw", lr=2e-3, weight_decay=0.05)
class Data2Vec(Method):
    def __init__(self, backbone, views, mask_ratio: float = 0.6, top_k: int = 0, momentum: float = 0.9998,
                 momentum_end: float = 0.9999, loss: str = "smooth_l1", loss_beta: float = 2.0):
        """top_k 0: 2/3 of the blocks (the paper's 8 of 12). The teacher's momentum rises linearly
        from `momentum` to `momentum_end` over the run."""
        super().__init__(backbone, views)
        if not hasattr(backbone, "tokens"):
            raise ValueError("data2vec needs a ViT backbone (vit_tiny, vit_small)")
        depth = len(backbone.blocks)
        self.top_k = top_k or max(1, round(depth * 8 / 12))
        if self.top_k > depth:
            raise ValueError(f"top_k {top_k} is larger than the backbone depth {depth}")
        if not 0 < mask_ratio < 1:
            raise ValueError(f"mask_ratio must be in (0, 1), got {mask_ratio}")
        self.mask_ratio, self.momentum, self.momentum_end = mask_ratio, momentum, momentum_end
        self.loss, self.loss_beta = loss, loss_beta
        dim = backbone.embed_dim
        self.mask_token = nn.Parameter(torch.zeros(dim))
        nn.init.trunc_normal_(self.mask_token, std=0.02)
        self.head = nn.Linear(dim, dim)
        self.teacher = frozen_copy(backbone)

    def training_step(self, images, gen, step, total_steps):
        x = self.views(images, gen)[0]
        mask = block_mask(len(x), self.backbone.grid, self.mask_ratio, gen, x.device)
        with torch.no_grad():
            _, layers = self.teacher.tokens(x, return_layers=True)
            target = top_k_average([layer[:, 1:] for layer in layers], self.top_k)[mask]
        student = self.backbone.tokens(x, mask=mask, mask_token=self.mask_token)[:, 1:]
        pred = self.head(student[mask])
        loss = latent_regression(pred, target, self.loss, self.loss_beta) * pred.shape[-1] ** 0.5
        return loss, {"masked_fraction": mask.float().mean().detach()}

    @torch.no_grad()
    def after_step(self, step, total_steps):
        ema_update(self.teacher, self.backbone, linear(step, total_steps, self.momentum, self.momentum_end))

    def parts(self):
        return {"backbone": self.teacher, "student": self.backbone, "heads": self.head}
