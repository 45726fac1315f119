"""I-JEPA (Assran et al., 2023, arXiv:2301.08243): from a context block of patches, a narrow ViT
predictor predicts the target encoder's (layer-normed) tokens of 4 target blocks; the target
encoder sees the full image and is an EMA of the context encoder (momentum 0.996 -> 1, linear
in the step as in the paper). No augmentation beyond the masks. The checkpoint's "backbone" is
the target encoder, the one the paper evaluates."""
from __future__ import annotations

import torch

from core.augment import CropSpec, ViewConfig
from core.augment.masks import jepa_blocks
from core.heads.predictor import MaskedPredictor, gather_tokens
from core.losses.latent import feature_norm, latent_regression
from core.methods.base import Method
from core.methods.ema_target import ema_update, frozen_copy
from core.methods.registry import register
from core.schedules import linear

# The paper uses only random resized crops (scale 0.3-1) and no flip or colour distortion.
IJEPA_VIEWS = ViewConfig(crops=[CropSpec(count=1, size=1.0, scale=(0.3, 1.0))], flip_p=0.0, jitter_p=0.0,
                         grayscale_p=0.0)


@register("ijepa", family="latent-prediction", default_backbone="vit_tiny", views=IJEPA_VIEWS,
          paper="arXiv:2301.08243", optimizer="adamw", lr=1e-3, weight_decay=0.04)
class IJEPA(Method):
    def __init__(self, backbone, views, predictor_dim: int = 384, predictor_depth: int = 6, num_targets: int = 4,
                 momentum: float = 0.996, loss: str = "smooth_l1"):
        super().__init__(backbone, views)
        if not hasattr(backbone, "tokens"):
            raise ValueError("ijepa needs a ViT backbone (vit_tiny, vit_small)")
        self.num_targets, self.momentum, self.loss = num_targets, momentum, loss
        self.target = frozen_copy(backbone)
        dim = backbone.embed_dim
        self.predictor = MaskedPredictor(dim, predictor_dim, predictor_depth, dim, backbone.grid)

    def training_step(self, images, gen, step, total_steps):
        x = self.views(images, gen)[0]
        b, t = len(x), self.num_targets
        context, targets = jepa_blocks(b, self.backbone.grid, gen, x.device, num_targets=t)
        with torch.no_grad():
            full = feature_norm(self.target.tokens(x)[:, 1:])  # (B, N, D), class token dropped
            goal = gather_tokens(full, targets.flatten(1)).view(b * t, targets.shape[2], -1)
        z = self.backbone.tokens(x, context)[:, 1:]
        # each target block is predicted on its own from the same context (the paper's loop)
        pred = self.predictor(z.repeat_interleave(t, 0), context.repeat_interleave(t, 0), targets.flatten(0, 1))
        return latent_regression(pred, goal, self.loss), {"context_patches": float(context.shape[1])}

    @torch.no_grad()
    def after_step(self, step, total_steps):
        ema_update(self.target, self.backbone, linear(step, total_steps, self.momentum, 1.0))

    def parts(self):
        return {"backbone": self.target, "context": self.backbone, "heads": self.predictor}
