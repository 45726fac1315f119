"""MLM plus unsupervised SimCSE on the same batch: the masked-token loss and the dropout
contrastive loss on the unmasked sentences, summed (weighted), one encoder for both."""
from __future__ import annotations

from dataclasses import replace

import torch
from torch import nn

from core.losses.simcse import simcse_loss
from core.methods.mlm import MLM, RECIPES as MLM_RECIPES
from core.methods.registry import register

RECIPES = {size: replace(recipe, method_options={"temperature": 0.05, "simcse_weight": 1.0},
                         sources={**recipe.sources, "method_options": "mlm's masking (BERT sec. 3.1); SimCSE's "
                                                                      "temperature 0.05 (arXiv:2104.08821)"},
                         notes="mlm's recipe with SimCSE's loss added at weight 1 (an unpublished mix: no paper value)")
           for size, recipe in MLM_RECIPES.items()}


@register("mlm+simcse", family="masked-language-modelling", recipes=RECIPES, modality="text",
          paper="arXiv:1810.04805 + arXiv:2104.08821")
class MLMSimCSE(MLM):
    def __init__(self, backbone, views=None, select_prob: float = 0.15, mask_prob: float = 0.8,
                 random_prob: float = 0.1, temperature: float = 0.05, simcse_weight: float = 1.0):
        super().__init__(backbone, views, select_prob, mask_prob, random_prob)
        self.temperature, self.simcse_weight = temperature, simcse_weight
        dim = backbone.feature_dim
        self.projector = nn.Sequential(nn.Linear(dim, dim), nn.Tanh())

    def training_step(self, ids, gen, step, total_steps):
        mlm, logs = super().training_step(ids, gen, step, total_steps)
        z1, z2 = self.projector(self.backbone(torch.cat([ids, ids]))).chunk(2)
        contrastive = simcse_loss(z1, z2, self.temperature)
        return mlm + self.simcse_weight * contrastive, {**logs, "mlm_loss": mlm.detach(),
                                                        "simcse_loss": contrastive.detach()}

    def parts(self):
        return {"backbone": self.backbone, "heads": self.head, "projector": self.projector}
