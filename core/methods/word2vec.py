"""word2vec (Mikolov et al., 2013): skip-gram and CBOW with negative sampling, trained by gensim."""
from __future__ import annotations

from core.methods.gensim_words import WORDS_TOKENIZER, GensimWordVectors
from core.methods.registry import register
from core.methods.recipe import Recipe

PAPER = "Mikolov et al., 2013 (arXiv:1310.4546, negative sampling and subsampling)"
C_CODE = "word2vec.c (code.google.com/archive/p/word2vec) defaults"
GENSIM = "gensim 4.4 Word2Vec defaults"


def recipes(sg: int) -> dict[str, Recipe]:
    lr = 0.025 if sg else 0.05
    lr_source = f"{C_CODE}: alpha 0.025 for skip-gram, 0.05 for CBOW (-cbow 1)"
    common = dict(optimizer="sgd", lr_scaling="none", batch_size=1, warmup_epochs=0.0, weight_decay=0.0, momentum=0.0,
                  base_lr=lr, final_lr=lr * 1e-4, tokenizer=dict(WORDS_TOKENIZER))
    sources = {
        "optimizer": f"{C_CODE}: plain SGD, the LR decaying linearly over the run (gensim does the same)",
        "base_lr": lr_source, "final_lr": f"{C_CODE}: alpha never below starting_alpha * 1e-4 ({GENSIM}: 0.0001)",
        "backbone_options": f"{C_CODE}: -size 100",
        "batch_size": "not used: gensim's own batches of 10,000 words (a step is one document here)",
        "tokenizer": "core.text.words: lowercased runs of letters and digits",
    }
    method_sources = (f"{C_CODE} and {GENSIM}: window 5, negative 5, sample 1e-3, min_count 5, unigram^0.75 "
                      f"noise ({PAPER} sec. 2.2)")
    return {
        "small": Recipe(backbone="word_vectors", epochs=10, backbone_options={"dim": 100},
                        method_options={"window": 5, "negative": 5, "sample": 1e-3, "min_count": 2},
                        sources={**sources, "method_options": method_sources + "; min_count 2 for small corpora "
                                                                               "(ours)",
                                 "epochs": "ours: 10 passes, a small corpus gives few updates per word"},
                        notes="Sized for a CPU and a corpus of a few MB: min_count 2 and 10 epochs.", **common),
        "base": Recipe(backbone="word_vectors", epochs=5, backbone_options={"dim": 100},
                       method_options={"window": 5, "negative": 5, "sample": 1e-3, "min_count": 5},
                       sources={**sources, "method_options": method_sources, "epochs": f"{C_CODE}: -iter 5"},
                       notes="The C code's defaults (its demo-word.sh uses CBOW, size 200, window 8, negative 25, "
                             "sample 1e-4, 15 iterations on text8).", **common),
    }


@register("word2vec", family="word-vectors", recipes=recipes(sg=1), modality="text", paper="arXiv:1310.4546")
class Word2VecSkipGram(GensimWordVectors):
    """Skip-gram: each word predicts the words of its window."""
    sg = 1


@register("word2vec_cbow", family="word-vectors", recipes=recipes(sg=0), modality="text", paper="arXiv:1301.3781")
class Word2VecCBOW(GensimWordVectors):
    """CBOW: the mean of a window's words predicts its centre word."""
    sg = 0
