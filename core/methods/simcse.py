"""Unsupervised SimCSE (Gao et al., 2021): the same sentence encoded twice, dropout as the only
augmentation, the other sentences of the batch as negatives."""
from __future__ import annotations

import torch
from torch import nn

from core.losses.simcse import simcse_loss
from core.methods.base import Method
from core.methods.registry import register
from core.methods.text_recipes import BUDGET, SIZE_SOURCES, SIZES
from core.methods.recipe import Recipe

SIMCSE = "SimCSE (arXiv:2104.08821)"
RECIPES = {
    size: Recipe(**SIZES[size], optimizer="adamw", base_lr=lr, lr_scaling="none", batch_size=batch, epochs=epochs,
                 warmup_epochs=0.0, weight_decay=0.0, betas=(0.9, 0.999), grad_clip=None,
                 method_options={"temperature": 0.05, "projector": True},
                 sources={**SIZE_SOURCES, "optimizer": f"{SIMCSE} (HF Trainer AdamW, no weight decay, no warm-up)",
                          "base_lr": lr_source, "batch_size": f"{SIMCSE} table D.1 (unsupervised: 64)",
                          "method_options": f"{SIMCSE} sec. 3 (temperature 0.05; an MLP over the readout in training "
                                            "only)",
                          "epochs": epochs_source},
                 notes=notes)
    for size, lr, batch, epochs, lr_source, epochs_source, notes in [
        ("tiny", 5e-4, 64, 10, f"{BUDGET}-style from-scratch LR: {SIMCSE} fine-tunes BERT at 3e-5, which a "
                               "randomly initialised encoder does not move from", "a short CPU run",
         "SimCSE starts from a pretrained BERT; from scratch it needs the larger LR and more than its one epoch."),
        ("small", 3e-4, 64, 10, "as tiny, lowered for the deeper model", "a short run", ""),
        ("base", 3e-5, 64, 1, f"{SIMCSE} table D.1 (BERT-base unsupervised: 3e-5)",
         f"{SIMCSE} (one epoch of 1M Wikipedia sentences)",
         "The paper's settings for fine-tuning a pretrained BERT-base; this service starts every run from random "
         "weights (a tokenizer, not weights, can come from a checkpoint), so from scratch give a larger lr."),
    ]
}


@register("simcse", family="contrastive", recipes=RECIPES, modality="text", paper="arXiv:2104.08821")
class SimCSE(Method):
    def __init__(self, backbone, views=None, temperature: float = 0.05, projector: bool = True):
        super().__init__(backbone, views)
        self.temperature = temperature
        dim = backbone.feature_dim
        # SimCSE's MLPLayer (dense + tanh) over the readout, used in training and dropped downstream
        self.projector = nn.Sequential(nn.Linear(dim, dim), nn.Tanh()) if projector else nn.Identity()

    def training_step(self, ids, gen, step, total_steps):
        z1, z2 = self.projector(self.backbone(torch.cat([ids, ids]))).chunk(2)  # two dropout masks
        return simcse_loss(z1, z2, self.temperature), {}

    def parts(self):
        return {"backbone": self.backbone, "heads": self.projector}
