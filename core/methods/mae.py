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
from core.methods.recipe import Recipe

# The paper's pre-training augmentation: random resized crop (scale 0.2-1) and flip only.
MAE_VIEWS = ViewConfig(crops=[CropSpec(count=1, size=1.0, scale=(0.2, 1.0))], jitter_p=0.0, grayscale_p=0.0)


SOLO = "solo-learn scripts/pretrain/cifar/mae.yaml"
OFFICIAL = "facebookresearch/mae PRETRAIN.md"
RECIPES = {
    "small": Recipe(
        backbone="vit_tiny", backbone_options={"patch_size": 4, "pool": "mean"},
        optimizer="adamw", base_lr=2e-4, batch_size=256, epochs=1000, warmup_epochs=10, weight_decay=0.05,
        betas=(0.9, 0.95),
        method_options={"mask_ratio": 0.75, "decoder_dim": 512, "decoder_depth": 8, "norm_pix_loss": True},
        # solo-learn's reconstruction views: crops of 8-100 % and flip, nothing else
        views=ViewConfig(crops=[CropSpec(count=1, size=1.0, scale=(0.08, 1.0))], jitter_p=0.0, grayscale_p=0.0),
        sources={"backbone_options": "pool mean: MAE probes average-pooled patch tokens (global_pool)",
                 "backbone": f"{SOLO} (vit_small, patch_size 4, img_size 32); vit_tiny here",
                 "optimizer": f"{SOLO} (adamw, betas 0.9 / 0.95)",
                 "base_lr": f"{SOLO} (lr 2e-4, scaled by batch/256)", "batch_size": SOLO,
                 "epochs": f"{SOLO} (max_epochs 1000)", "warmup_epochs": "solo-learn warmup_cosine default (10)",
                 "weight_decay": f"{SOLO} (0.05)",
                 "method_options": f"{SOLO} (mask_ratio 0.75, decoder_embed_dim 512, decoder_depth 8, "
                                   "norm_pix_loss)",
                 "views": "solo-learn cifar augmentations/reconstruction.yaml (crop 0.08-1, flip 0.5)"},
        notes="ViT-Tiny/4 instead of solo-learn's ViT-Small/4 (the library's small-image ViT). Crops of 8-100 % "
              "as solo-learn's CIFAR run; the paper uses 20-100 % at 224 px."),
    "large": Recipe(
        backbone="vit_small", backbone_options={"patch_size": 16, "pool": "mean"},
        optimizer="adamw", base_lr=1.5e-4, batch_size=256, epochs=800, warmup_epochs=40, weight_decay=0.05,
        betas=(0.9, 0.95),
        method_options={"mask_ratio": 0.75, "decoder_dim": 512, "decoder_depth": 8, "norm_pix_loss": True},
        views=MAE_VIEWS,
        sources={"backbone_options": "pool mean: MAE probes average-pooled patch tokens (global_pool)",
                 "backbone": f"{OFFICIAL} (mae_vit_large_patch16; ViT-B/16 and ViT-H/14 also); vit_small/16 here",
                 "optimizer": "facebookresearch/mae main_pretrain.py (AdamW, betas 0.9 / 0.95)",
                 "base_lr": f"{OFFICIAL} (--blr 1.5e-4; lr = blr x batch/256)",
                 "batch_size": f"256 here; {OFFICIAL}'s effective batch is 4096",
                 "epochs": f"{OFFICIAL} (--epochs 800)", "warmup_epochs": f"{OFFICIAL} (--warmup_epochs 40)",
                 "final_lr": "facebookresearch/mae main_pretrain.py (--min_lr 0)",
                 "weight_decay": f"{OFFICIAL} (--weight_decay 0.05)",
                 "method_options": f"{OFFICIAL} (--mask_ratio 0.75, --norm_pix_loss); models_mae.py (decoder 512 "
                                   "wide, 8 blocks)",
                 "views": "facebookresearch/mae main_pretrain.py (RandomResizedCrop scale 0.2-1, flip)"},
        notes="ViT-Small/16 (the largest ViT this library builds) instead of the paper's ViT-B/L/H; batch 256 "
              "instead of 4096 (one accelerator), LR by the paper's linear rule."),
}


@register("mae", family="masked-modelling", recipes=RECIPES, paper="arXiv:2111.06377")
class MAE(Method):
    bf16_params_ok = True  # no EMA target, no state changed outside the optimiser (Method)

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
