"""data2vec for images (Baevski et al., 2022, arXiv:2202.03555): the student ViT sees the image with
60% of its patches (BEiT block-wise masking) replaced by a learned mask token; an EMA teacher sees
the full image; targets are the average of the raw outputs of the teacher's top-K blocks followed by
one layer norm without parameters; a linear head regresses them at the masked positions (smooth L1,
beta 2, summed over features and scaled by 1/sqrt(D) as in the paper's code).

Checkpoint "backbone" is the EMA teacher (the encoder we hand out for frozen features); the paper
fine-tunes the student, saved as the "student" part. Targets use each block's output after its
residual, as the official vision runs (`layer_results 'end'`, fairseq `end_of_block_targets`)."""
from __future__ import annotations

import torch
from torch import nn

from core.augment import CropSpec, ViewConfig
from core.augment.masks import block_mask
from core.losses.latent import latent_regression, top_k_average
from core.methods.base import Method
from core.methods.momentum import ema_update, frozen_copy
from core.methods.registry import register
from core.methods.recipe import Recipe
from core.schedules import linear

# BEiT's pre-training augmentation, as data2vec (data2vec_vision beit/datasets.py): random resized crop
# (8-100 %), flip, and ColorJitter(0.4, 0.4, 0.4) on every image.
DATA2VEC_VIEWS = ViewConfig(crops=[CropSpec(count=1, size=1.0, scale=(0.08, 1.0))], jitter_p=1.0,
                            brightness=0.4, contrast=0.4, saturation=0.4, hue=0.0, grayscale_p=0.0)


VISION = "facebookresearch/data2vec_vision beit/README.md (ViT-B pre-training command)"
# top_k 0 = half the blocks: the command's target_layers [6..11] of 12. The EMA is constant: with
# --ema_start_at 0, beit/engine_for_cyclical.py never uses --ema_decay_init and decays at 0.9998 throughout.
OPTIONS = {"mask_ratio": 0.6, "top_k": 0, "momentum": 0.9998, "momentum_end": 0.9998, "loss": "smooth_l1",
           "loss_beta": 2.0}
SOURCES = {"optimizer": f"{VISION} (--opt adamw, torch default betas)",
           "epochs": f"{VISION} (--epochs 800)", "warmup_epochs": f"{VISION} (--warmup_epochs 10)",
           "weight_decay": f"{VISION} (--weight_decay 0.05, constant)", "grad_clip": f"{VISION} (--clip_grad 3.0)",
           "method_options": f"{VISION} (--num_mask_patches 120 of 196, --target_layers [6..11], --ema_decay 0.9998 "
                             "--ema_start_at 0, --l1_beta 2.0)",
           "views": "data2vec_vision beit/datasets.py DataAugmentationForBEiT (jitter 0.4/0.4/0.4 always, flip, "
                    "crop 0.08-1)"}
RECIPES = {
    "small": Recipe(
        backbone="vit_tiny", backbone_options={"patch_size": 4, "pool": "mean"},
        optimizer="adamw", base_lr=2.5e-4, batch_size=256, epochs=800, warmup_epochs=10, final_lr=1.25e-6,
        weight_decay=0.05, betas=(0.9, 0.999), grad_clip=3.0,
        method_options=dict(OPTIONS), views=DATA2VEC_VIEWS,
        sources={"backbone_options": "pool mean: data2vec probes mean-pooled patch tokens (no [CLS] loss)",
                 **SOURCES, "backbone": "derived: vit_tiny with 4-px patches (an 8 x 8 grid at 32 px)",
                 "base_lr": f"derived: {VISION} --lr 2e-3 at batch 128 x 16 = 2048, x 256/2048",
                 "final_lr": "derived: data2vec_vision run_cyclical.py --min_lr 1e-5 = peak / 200, kept as a ratio"},
        notes="No published small-image data2vec recipe: derived from the paper's ViT-B one (schedule, masking, "
              "targets and EMA unchanged, LR linearly scaled from batch 2048 to 256) for a ViT-Tiny/4. The "
              "warm-up starts at 0 (the code: warmup_lr 1e-6)."),
    "large": Recipe(
        backbone="vit_small", backbone_options={"patch_size": 16, "pool": "mean"},
        optimizer="adamw", base_lr=2.5e-4, batch_size=256, epochs=800, warmup_epochs=10, final_lr=1.25e-6,
        weight_decay=0.05, betas=(0.9, 0.999), grad_clip=3.0,
        method_options=dict(OPTIONS), views=DATA2VEC_VIEWS,
        sources={"backbone_options": "pool mean: data2vec probes mean-pooled patch tokens (no [CLS] loss)",
                 **SOURCES, "backbone": f"{VISION} (beit_base_patch16_224); vit_small/16 here",
                 "base_lr": f"{VISION} (--lr 2e-3 at batch 128 x 16 = 2048, not scaled), x 256/2048",
                 "batch_size": "256 here; the paper's is 2048",
                 "final_lr": "data2vec_vision run_cyclical.py (--min_lr 1e-5 = peak / 200, kept as a ratio)"},
        notes="ViT-Small/16 instead of ViT-B/16 (a plain ViT: no BEiT relative position bias or layer scale); "
              "batch 256 instead of 2048 (one accelerator), LR by the linear rule. The EMA is the released run's "
              "constant 0.9998; fairseq's later base_imagenet_d2v1.yaml anneals 0.999 -> 0.9998 instead."),
}


@register("data2vec", family="latent-prediction", recipes=RECIPES, paper="arXiv:2202.03555")
class Data2Vec(Method):
    def __init__(self, backbone, views, mask_ratio: float = 0.6, top_k: int = 0, momentum: float = 0.999,
                 momentum_end: float = 0.9998, momentum_anneal_frac: float = 1.0, loss: str = "smooth_l1",
                 loss_beta: float = 2.0):
        """Defaults are fairseq's data2vec vision config (examples/data2vec/config/vision/pretraining/
        base_imagenet_d2v1.yaml: average_top_k_layers 6, ema_decay 0.999 -> ema_end_decay 0.9998,
        layer_norm_targets; ema_anneal_end_step defaults to max_update). The released BEiT-based
        run (facebookresearch/data2vec_vision: --target_layers [6..11] --post_target_layer_norm
        --ema_decay 0.9998 --ema_start_at 0) keeps 0.9998 constant: momentum = momentum_end = 0.9998.

        top_k 0: half of the blocks (6 of 12). The teacher's momentum rises linearly from
        `momentum` to `momentum_end` over the first `momentum_anneal_frac` of training and then
        stays there; 1.0 is fairseq's anneal over the whole run. A fraction rather than a step
        count, so that the schedule keeps its shape when a recipe changes the run's length."""
        super().__init__(backbone, views)
        if not hasattr(backbone, "tokens"):
            raise ValueError("data2vec needs a ViT backbone (vit_tiny, vit_small)")
        depth = len(backbone.blocks)
        self.top_k = top_k or max(1, depth // 2)
        if self.top_k > depth:
            raise ValueError(f"top_k {top_k} is larger than the backbone depth {depth}")
        if not 0 < mask_ratio < 1:
            raise ValueError(f"mask_ratio must be in (0, 1), got {mask_ratio}")
        if not 0 < momentum_anneal_frac <= 1:
            raise ValueError(f"momentum_anneal_frac must be in (0, 1], got {momentum_anneal_frac}")
        self.mask_ratio, self.momentum, self.momentum_end = mask_ratio, momentum, momentum_end
        self.momentum_anneal_frac = momentum_anneal_frac
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
            target = top_k_average([layer[:, 1:] for layer in layers], self.top_k)
        student = self.backbone.tokens(x, mask=mask, mask_token=self.mask_token)[:, 1:]
        # every position regressed, the loss averaged over the masked ones: the number of masked
        # patches varies per sample, and indexing by the mask would read it on the host
        pred = self.head(student)
        loss = latent_regression(pred, target, self.loss, self.loss_beta, mask=mask) * pred.shape[-1] ** 0.5
        return loss, {"masked_fraction": mask.float().mean().detach()}

    @torch.no_grad()
    def after_step(self, step, total_steps):
        anneal_steps = max(1, round(self.momentum_anneal_frac * total_steps))
        ema_update(self.teacher, self.backbone, linear(step, anneal_steps, self.momentum, self.momentum_end))

    def parts(self):
        return {"backbone": self.teacher, "teacher": self.teacher, "student": self.backbone, "heads": self.head}
