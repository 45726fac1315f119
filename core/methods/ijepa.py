"""I-JEPA (Assran et al., 2023, arXiv:2301.08243): from a context block of patches, a narrow ViT
predictor predicts the target encoder's (layer-normed) tokens of 4 target blocks; the target
encoder sees the full image and is an EMA of the context encoder (momentum 0.996 -> 1, linear
in the step as in the paper). No augmentation beyond the masks. The checkpoint's "backbone" is
the target encoder, the one the paper evaluates."""
from __future__ import annotations

import torch

from core.augment import CropSpec, ViewConfig
from core.heads.predictor import MaskedPredictor, gather_tokens
from core.losses.latent import feature_norm, latent_regression
from core.methods.base import Method
from core.methods.momentum import ema_update, frozen_copy
from core.augment.masks import jepa_blocks
from core.methods.registry import register
from core.methods.recipe import Recipe
from core.schedules import linear

# The paper uses only random resized crops (scale 0.3-1) and no flip or colour distortion.
MASK_STREAM = 11  # the masks' host random stream, apart from the views' device generator
IJEPA_VIEWS = ViewConfig(crops=[CropSpec(count=1, size=1.0, scale=(0.3, 1.0))], flip_p=0.0, jitter_p=0.0,
                         grayscale_p=0.0)


CONFIG = "facebookresearch/ijepa configs/in1k_vith14_ep300.yaml"
RECIPES = {
    "small": Recipe(
        backbone="vit_tiny", backbone_options={"patch_size": 4, "pool": "mean"},
        optimizer="adamw", base_lr=1.25e-4, batch_size=256, epochs=300, warmup_epochs=40, final_lr=1.25e-7,
        weight_decay=0.04, final_weight_decay=0.4, betas=(0.9, 0.999),
        method_options={"predictor_dim": 192, "predictor_depth": 6, "num_targets": 4, "momentum": 0.996,
                        "loss": "smooth_l1"},
        views=IJEPA_VIEWS,
        sources={"backbone_options": "pool mean: I-JEPA probes average-pooled patch tokens (no [CLS] loss)",
                 "backbone": "derived: vit_tiny with 4-px patches (an 8 x 8 grid at 32 px)",
                 "optimizer": f"{CONFIG} (AdamW, torch default betas)",
                 "base_lr": f"derived: {CONFIG} lr 1e-3 at batch 2048, x 256/2048",
                 "epochs": f"{CONFIG} (300)", "warmup_epochs": f"{CONFIG} (warmup 40)",
                 "final_lr": f"derived: {CONFIG} final_lr 1e-6 = peak / 1000, kept as a ratio",
                 "weight_decay": f"{CONFIG} (0.04)", "final_weight_decay": f"{CONFIG} (0.4, cosine)",
                 "method_options": f"{CONFIG} (num_pred_masks 4, ema 0.996 -> 1.0); ijepa src/train.py "
                                   "(smooth L1); predictor derived: 192 wide (the encoder's width), 6 blocks",
                 "views": f"{CONFIG} (crop_scale 0.3-1, no flip, no colour distortion, no blur)"},
        notes="No published small-image I-JEPA recipe: derived from the paper's ImageNet one (schedule, weight "
              "decay and EMA unchanged, LR linearly scaled from batch 2048 to 256) for a ViT-Tiny/4. The "
              "predictor is narrowed to the encoder's width and 6 blocks (the paper: 384 wide, 12 blocks, for "
              "ViT-H). The warm-up starts at 0 (the paper: start_lr 2e-4)."),
    "large": Recipe(
        backbone="vit_small", backbone_options={"patch_size": 16, "pool": "mean"},
        optimizer="adamw", base_lr=1.25e-4, batch_size=256, epochs=300, warmup_epochs=40, final_lr=1.25e-7,
        weight_decay=0.04, final_weight_decay=0.4, betas=(0.9, 0.999),
        method_options={"predictor_dim": 384, "predictor_depth": 12, "num_targets": 4, "momentum": 0.996,
                        "loss": "smooth_l1"},
        views=IJEPA_VIEWS,
        sources={"backbone_options": "pool mean: I-JEPA probes average-pooled patch tokens (no [CLS] loss)",
                 "backbone": f"{CONFIG} (vit_huge, patch 14); vit_small/16 here",
                 "optimizer": f"{CONFIG} (AdamW, torch default betas)",
                 "base_lr": f"{CONFIG} (lr 1e-3 at batch 2048 = 128 x 16 GPUs), x 256/2048",
                 "batch_size": "256 here; the paper's is 2048",
                 "epochs": f"{CONFIG} (300)", "warmup_epochs": f"{CONFIG} (warmup 40)",
                 "final_lr": f"{CONFIG} (final_lr 1e-6 = peak / 1000, kept as a ratio)",
                 "weight_decay": f"{CONFIG} (0.04)", "final_weight_decay": f"{CONFIG} (0.4, cosine)",
                 "method_options": f"{CONFIG} (pred_emb_dim 384, pred_depth 12, num_pred_masks 4, ema 0.996 -> "
                                   "1.0); ijepa src/train.py (smooth L1)",
                 "views": f"{CONFIG} (crop_scale 0.3-1, no flip, no colour distortion, no blur)"},
        notes="ViT-Small/16 (the largest ViT this library builds) instead of ViT-H/14; batch 256 instead of "
              "2048 (one accelerator), LR by the linear rule (the paper's code does not scale it). The warm-up "
              "starts at 0 (the paper: start_lr 2e-4)."),
}


@register("ijepa", family="latent-prediction", recipes=RECIPES, paper="arXiv:2301.08243")
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
        context, targets = step_blocks(b, self.backbone.grid, gen, x.device, t)
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
        return {"backbone": self.target, "teacher": self.target, "context": self.backbone, "heads": self.predictor}


@torch.compiler.disable
def step_blocks(batch: int, grid: int, gen, device, num_targets: int):
    """The step's I-JEPA blocks, drawn on the host from the step's seed (the generator's seed, not
    its device state; gen None, in a compiled step: the global generator's, which the loop seeds
    per step). Kept out of torch.compile's graph, which would freeze the seed it read while tracing."""
    seed = gen.initial_seed() if gen is not None else torch.initial_seed()
    return jepa_blocks(batch, grid, [seed, MASK_STREAM], device, num_targets=num_targets)
