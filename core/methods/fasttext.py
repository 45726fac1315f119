"""fastText (Bojanowski et al., 2017): skip-gram over words and their character n-grams (hashed
into buckets), trained by gensim; an unseen word is the mean of its n-grams' vectors."""
from __future__ import annotations

from core.methods.gensim_words import WORDS_TOKENIZER, GensimWordVectors
from core.methods.registry import register
from core.methods.recipe import Recipe

PAPER = "Bojanowski et al., 2017 (arXiv:1607.04606) sec. 4"
FASTTEXT = "fastText's args.cc defaults (skipgram)"


class _Recipes:
    common = dict(optimizer="sgd", lr_scaling="none", batch_size=1, warmup_epochs=0.0, weight_decay=0.0, momentum=0.0,
                  base_lr=0.05, final_lr=0.05 * 1e-4, tokenizer=dict(WORDS_TOKENIZER))
    sources = {"optimizer": f"{PAPER}: SGD with a linearly decaying LR", "base_lr": f"{PAPER} and {FASTTEXT}: lr 0.05",
               "final_lr": "gensim's min_alpha (0.0001 of 0.05 as in word2vec.c)",
               "batch_size": "not used: gensim's own batches (a step is one document here)",
               "tokenizer": "core.text.words: lowercased runs of letters and digits"}
    method = f"{PAPER} and {FASTTEXT}: window 5, negative 5, sample 1e-4, minCount 5"


RECIPES = {
    "small": Recipe(backbone="word_vectors", epochs=10,
                    backbone_options={"dim": 100, "buckets": 100_000, "min_n": 3, "max_n": 6},
                    method_options={"window": 5, "negative": 5, "sample": 1e-4, "min_count": 2},
                    sources={**_Recipes.sources, "method_options": _Recipes.method + "; min_count 2 for small "
                                                                                     "corpora (ours)",
                             "backbone_options": f"n-grams 3..6 ({PAPER}); dim 100 ({FASTTEXT}); 100,000 buckets "
                                                 "(ours: 2M x 100 floats is 800 MB)",
                             "epochs": "ours: 10 passes for a small corpus"},
                    notes="Sized for a CPU: 100,000 n-gram buckets instead of 2,000,000, min_count 2, 10 epochs.",
                    **_Recipes.common),
    "base": Recipe(backbone="word_vectors", epochs=5,
                   backbone_options={"dim": 300, "buckets": 2_000_000, "min_n": 3, "max_n": 6},
                   method_options={"window": 5, "negative": 5, "sample": 1e-4, "min_count": 5},
                   sources={**_Recipes.sources, "method_options": _Recipes.method,
                            "backbone_options": f"{PAPER}: 300 dimensions, n-grams 3..6; {FASTTEXT}: bucket 2,000,000",
                            "epochs": f"{PAPER} and {FASTTEXT}: 5 epochs"},
                   notes="The paper's settings; the bucket matrix alone is 2.4 GB.", **_Recipes.common),
}


@register("fasttext", family="word-vectors", recipes=RECIPES, modality="text", paper="arXiv:1607.04606")
class FastText(GensimWordVectors):
    sg = 1
    reports_loss = False

    def gensim_model(self, lr: float, final_lr: float, epochs: int, seed: int):
        from gensim.models import FastText as GensimFastText

        net = self.backbone
        if not net.buckets:
            raise ValueError("fastText needs backbone_options.buckets > 0 (its character n-gram vectors)")
        return GensimFastText(vector_size=net.dim, window=self.window, min_count=self.min_count, sample=self.sample,
                              negative=self.negative, hs=0, sg=1, ns_exponent=self.ns_exponent, alpha=lr,
                              min_alpha=final_lr, epochs=epochs, seed=seed, workers=1, bucket=net.buckets,
                              min_n=net.min_n, max_n=net.max_n)
