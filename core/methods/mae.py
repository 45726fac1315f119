"""MAE (He et al., 2021, arXiv:2111.06377): mask 75% of the patches at random, encode only the
visible ones, reconstruct the pixels of the masked ones with a lightweight decoder (mask tokens,
sine-cosine position embeddings); MSE on masked patches, per-patch normalised targets."""
from __future__ import annotations

import torch
from torch import nn

from core.augment import CropSpec, ViewConfig
from core.augment.masks import complement, random_keep
from core.heads.predictor import MaskedPredictor
from core.losses.masked import masked_mse, patch_pixels
from core.methods.base import Method
from core.methods.registry import register

# The paper's pre-training augmentation: random resized crop (scale 0.2-1) and flip only.
MAE_VIEWS = ViewConfig(crops=[CropSpec(count=1, size=1.0, scale=(0.2, 1.0))], jitter_p=0.0, grayscale_p=0.0)


@register("mae", family="masked", default_backbone="vit_tiny", views=MAE_VIEWS, paper="arXiv:2111.06377",
          optimizer="adamw", lr=1.5e-4, weight_decay=0.05)
class MAE(Method):
    def __init__(self, backbone, views, mask_ratio: float = 0.75, decoder_dim: int = 512, decoder_depth: int = 8,
                 norm_pix_loss: bool = True):
        super().__init__(backbone, views)
        if not hasattr(backbone, "tokens"):
            raise ValueError("mae needs a ViT backbone (vit_tiny, vit_small)")
        if not 0 <= mask_ratio < 1:
            raise ValueError(f"mask_ratio must be in [0, 1), got {mask_ratio}")
        self.mask_ratio, self.norm_pix_loss = mask_ratio, norm_pix_loss
        patch_dim = backbone.patch_size**2 * backbone.patch_embed.in_channels
        self.decoder = MaskedPredictor(backbone.embed_dim, decoder_dim, decoder_depth, patch_dim, backbone.grid)
        with torch.no_grad():  # MAE initialises the patch embedding like a linear layer
            w = backbone.patch_embed.weight
            nn.init.xavier_uniform_(w.view(w.shape[0], -1))

    def training_step(self, images, gen, step, total_steps):
        x = self.views(images, gen)[0]
        b, n = len(x), self.backbone.num_patches
        keep = random_keep(b, n, self.mask_ratio, gen, x.device)
        hidden = complement(keep, n)
        tokens = self.backbone.tokens(x, keep)
        pred = self.decoder(tokens[:, 1:], keep, hidden, prefix=tokens[:, :1])
        target = patch_pixels(x, self.backbone.patch_size)
        target = target.gather(1, hidden[..., None].expand(-1, -1, target.shape[-1]))
        return masked_mse(pred, target, self.norm_pix_loss), {}

    def parts(self):
        return {"backbone": self.backbone, "heads": self.decoder}
