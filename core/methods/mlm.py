"""Masked language modelling (BERT, Devlin et al., 2019; RoBERTa's dynamic masking, Liu et al., 2019)."""
from __future__ import annotations

from core.heads.mlm import MLMHead
from core.losses.mlm import masked_lm_loss
from core.methods.base import Method
from core.methods.registry import register
from core.methods.text_recipes import BERT, BUDGET, SIZE_SOURCES, SIZES
from core.methods.recipe import Recipe
from core.text.masking import IGNORE, mask_tokens

RECIPES = {
    "tiny": Recipe(**SIZES["tiny"], optimizer="adamw", base_lr=1e-3, lr_scaling="none", batch_size=128, epochs=40,
                   warmup_epochs=2.4, weight_decay=0.01, betas=(0.9, 0.98), grad_clip=1.0,
                   sources={**SIZE_SOURCES, "optimizer": f"{BUDGET} (AdamW, betas 0.9/0.98, weight decay 0.01)",
                            "base_lr": f"{BUDGET} (peak 1e-3 for small models with a short schedule)",
                            "warmup_epochs": f"{BUDGET} (6 % warm-up)", "grad_clip": f"{BERT} (clip 1.0)",
                            "epochs": f"{BERT} (about 40 epochs)",
                            "method_options": f"{BERT} sec. 3.1 (15 %, 80/10/10)"},
                   notes="For a CPU and a corpus of ~100k short texts: BERT-Tiny's shape with the academic-budget "
                         "optimiser settings; batch 128 instead of 4k."),
    "small": Recipe(**SIZES["small"], optimizer="adamw", base_lr=5e-4, lr_scaling="none", batch_size=256, epochs=40,
                    warmup_epochs=2.4, weight_decay=0.01, betas=(0.9, 0.98), grad_clip=1.0,
                    sources={**SIZE_SOURCES, "optimizer": f"{BUDGET} (AdamW, betas 0.9/0.98, weight decay 0.01)",
                             "base_lr": f"{BUDGET}; halved for the deeper model", "grad_clip": f"{BERT} (clip 1.0)",
                             "warmup_epochs": f"{BUDGET} (6 % warm-up)", "epochs": f"{BERT} (about 40 epochs)",
                             "method_options": f"{BERT} sec. 3.1 (15 %, 80/10/10)"}),
    "base": Recipe(**SIZES["base"], optimizer="adamw", base_lr=1e-4, lr_scaling="none", batch_size=256, epochs=40,
                   warmup_epochs=0.4, weight_decay=0.01, betas=(0.9, 0.999), grad_clip=1.0,
                   sources={**SIZE_SOURCES, "optimizer": f"{BERT} (Adam, betas 0.9/0.999, L2 weight decay 0.01)",
                            "base_lr": f"{BERT} (1e-4, batch 256)", "batch_size": f"{BERT} (256 sequences)",
                            "epochs": f"{BERT} (1,000,000 steps, about 40 epochs)",
                            "warmup_epochs": f"{BERT} (10,000 of 1,000,000 steps = 0.4 of 40 epochs)",
                            "grad_clip": "google-research/bert optimization.py (clip_by_global_norm 1.0)",
                            "method_options": f"{BERT} sec. 3.1 (15 %, 80/10/10)"},
                   notes="BERT trains 90 % of its steps at 128 tokens and the rest at 512; this recipe keeps 512 "
                         "throughout and has no next-sentence objective (RoBERTa drops it)."),
}


@register("mlm", family="masked-language-modelling", recipes=RECIPES, modality="text", paper="arXiv:1810.04805")
class MLM(Method):
    def __init__(self, backbone, views=None, select_prob: float = 0.15, mask_prob: float = 0.8,
                 random_prob: float = 0.1):
        super().__init__(backbone, views)
        self.select_prob, self.mask_prob, self.random_prob = select_prob, mask_prob, random_prob
        self.head = MLMHead(backbone.feature_dim, backbone.vocab_size)

    def predict(self, inputs, targets):
        """(logits at the selected positions, their targets) for masked `inputs`."""
        tokens = self.backbone.tokens(inputs)
        selected = targets != IGNORE
        return self.head(tokens[selected], self.backbone.token_embed.weight), targets[selected]

    def training_step(self, ids, gen, step, total_steps):
        inputs, targets = mask_tokens(ids, gen, self.backbone.vocab_size, self.select_prob, self.mask_prob,
                                      self.random_prob)
        logits, chosen = self.predict(inputs, targets)
        accuracy = (logits.argmax(1) == chosen).float().mean() if len(chosen) else logits.new_zeros(())
        return masked_lm_loss(logits, chosen), {"mlm_accuracy": accuracy.detach()}

    def parts(self):
        return {"backbone": self.backbone, "heads": self.head}
