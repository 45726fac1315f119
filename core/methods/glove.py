"""GloVe (Pennington et al., 2014): word and context vectors and biases fitted by weighted least
squares to the log co-occurrence counts, with AdaGrad, in the one training loop (on the device).
Batches are co-occurrence entries (core.text.cooccurrence); the served vectors are W + W~."""
from __future__ import annotations

import torch
from torch import nn

from core.losses.glove import glove_loss
from core.methods.base import Method
from core.methods.gensim_words import WORDS_TOKENIZER
from core.methods.registry import register
from core.methods.recipe import Recipe

PAPER = "Pennington et al., 2014 (GloVe, EMNLP) sec. 4.2"
DEMO = "GloVe's demo.sh (github.com/stanfordnlp/GloVe)"
GLOVE_C = "glove.c defaults"

COMMON = dict(optimizer="adagrad", lr_scaling="none", base_lr=0.05, final_lr=0.05, warmup_epochs=0.0,
              weight_decay=0.0, batch_size=512, tokenizer=dict(WORDS_TOKENIZER))
SOURCES = {"optimizer": f"{PAPER}: AdaGrad; {GLOVE_C}: squared-gradient sums start at 1",
           "base_lr": f"{PAPER} and {GLOVE_C}: initial learning rate 0.05", "final_lr": "constant LR (AdaGrad's own decay)",
           "batch_size": f"ours: {GLOVE_C} updates per entry (Hogwild threads); 512 entries per step, the loss summed "
                         "so each entry's gradient keeps glove.c's scale",
           "tokenizer": "core.text.words: lowercased runs of letters and digits"}

RECIPES = {
    "small": Recipe(backbone="word_vectors", epochs=15, backbone_options={"dim": 50, "context": True},
                    method_options={"window": 15, "min_count": 5, "x_max": 10.0, "alpha": 0.75},
                    sources={**SOURCES, "backbone_options": f"{DEMO}: VECTOR_SIZE=50",
                             "method_options": f"{DEMO}: WINDOW_SIZE=15, VOCAB_MIN_COUNT=5, X_MAX=10 (for text8); "
                                               f"alpha 0.75 ({PAPER})",
                             "epochs": f"{DEMO}: MAX_ITER=15"},
                    notes="demo.sh's settings for text8 (a small corpus), on a CPU.", **COMMON),
    "base": Recipe(backbone="word_vectors", epochs=100, backbone_options={"dim": 300, "context": True},
                   method_options={"window": 10, "min_count": 5, "x_max": 100.0, "alpha": 0.75},
                   sources={**SOURCES, "backbone_options": f"{PAPER}: 300 dimensions",
                            "method_options": f"{PAPER}: x_max 100, alpha 3/4, a symmetric window of 10 words; "
                                              f"{DEMO}: VOCAB_MIN_COUNT=5",
                            "epochs": f"{PAPER}: 100 iterations for 300 dimensions (50 below)"},
                   notes="The paper's settings (its vocabulary: the 400,000 most frequent words).", **COMMON),
}


@register("glove", family="word-vectors", recipes=RECIPES, modality="text", paper="Pennington et al., 2014")
class GloVe(Method):
    def __init__(self, backbone, views=None, window: int = 10, min_count: int = 5, x_max: float = 100.0,
                 alpha: float = 0.75):
        super().__init__(backbone, views)
        if backbone.context_vectors.shape[0] != backbone.vocab_size:
            raise ValueError("GloVe needs word vectors with context vectors (backbone_options.context true)")
        self.window, self.min_count, self.x_max, self.alpha = window, min_count, x_max, alpha
        vocab, dim = backbone.vocab_size, backbone.dim
        self.bias = nn.Parameter(torch.empty(vocab))
        self.context_bias = nn.Parameter(torch.empty(vocab))
        with torch.no_grad():  # glove.c: every parameter uniform in [-0.5, 0.5) / vector_size
            for p in (backbone.vectors, backbone.context_vectors, self.bias, self.context_bias):
                p.uniform_(-0.5, 0.5).div_(dim)

    def training_step(self, entries, gen, step, total_steps):
        """entries: (B, 3) float64 rows (word id, context id, co-occurrence count)."""
        i, j, x = entries[:, 0].long(), entries[:, 1].long(), entries[:, 2].float()
        net = self.backbone
        loss = glove_loss(net.vectors[i], net.context_vectors[j], self.bias[i], self.context_bias[j], x,
                          self.x_max, self.alpha)
        return loss, {"cost": loss.detach() / len(x)}

    def parts(self):
        return {"backbone": self.backbone}
