"""The word-vector methods gensim trains (word2vec, fastText): the registry's method object
holds the hyper-parameters and the WordVectors backbone; `fit` runs gensim on the corpus and
copies its arrays into the backbone (never a pickle). gensim, not the training loop, does the
optimisation: its own linear learning-rate decay, one thread so a seed gives the same vectors."""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from core.methods.base import Method
from core.text.words import split_words

WORDS_TOKENIZER = {"kind": "words", "lowercase": True}  # the recipes' "tokenizer": core.text.words


class StopTraining(Exception):
    """Raised from the epoch callback to end a gensim run early (cancel, shutdown)."""


class GensimWordVectors(Method):
    sg = 1  # 1 skip-gram, 0 CBOW
    reports_loss = True  # gensim's Word2Vec computes its loss; its FastText does not

    def __init__(self, backbone, views=None, window: int = 5, negative: int = 5, sample: float = 1e-3,
                 min_count: int = 5, ns_exponent: float = 0.75):
        super().__init__(backbone, views)
        self.window, self.negative, self.sample = window, negative, sample
        self.min_count, self.ns_exponent = min_count, ns_exponent

    def training_step(self, batch, gen, step, total_steps):
        raise RuntimeError(f"{self.name} is trained by gensim (fit), not by the training loop")

    def gensim_model(self, lr: float, final_lr: float, epochs: int, seed: int):
        from gensim.models import Word2Vec

        return Word2Vec(vector_size=self.backbone.dim, window=self.window, min_count=self.min_count,
                        sample=self.sample, negative=self.negative, hs=0, sg=self.sg, ns_exponent=self.ns_exponent,
                        alpha=lr, min_alpha=final_lr, epochs=epochs, seed=seed, workers=1)

    def fit(self, texts: list[str], lr: float, final_lr: float, epochs: int, seed: int,
            on_epoch: Callable[[int, dict], None] | None = None) -> dict:
        """Train on `texts` (split by core.text.words) and fill the backbone, whose vocab_size must
        be the number of words seen min_count times. `on_epoch(epoch, logs)` runs after each epoch
        and may raise StopTraining. Returns the last epoch's logs."""
        from gensim.models.callbacks import CallbackAny2Vec

        sentences = [words for words in (split_words(t) for t in texts) if words]
        model = self.gensim_model(lr, final_lr, epochs, seed)
        model.build_vocab(corpus_iterable=sentences)
        if len(model.wv.index_to_key) != self.backbone.vocab_size:
            raise ValueError(f"gensim kept {len(model.wv.index_to_key)} words; the backbone was sized for "
                             f"{self.backbone.vocab_size}")
        logs: dict = {}

        class Epochs(CallbackAny2Vec):
            def __init__(self):
                self.epoch, self.previous = 0, 0.0

            def on_epoch_end(self, trained):
                self.epoch += 1
                logs.clear()
                logs["epoch"] = float(self.epoch)
                if trained.compute_loss:  # word2vec reports its running loss; fastText has none
                    total = trained.get_latest_training_loss()
                    logs["loss"] = float(total - self.previous) / max(1, trained.corpus_total_words)
                    self.previous = total
                if on_epoch is not None:
                    on_epoch(self.epoch, dict(logs))

        model.train(corpus_iterable=sentences, total_examples=model.corpus_count, epochs=model.epochs,
                    compute_loss=self.reports_loss,
                    callbacks=[Epochs()])
        self.load_from(model)
        return logs

    @torch.no_grad()
    def load_from(self, model) -> None:
        """Copy a trained gensim model's arrays (and vocabulary) into the backbone."""
        wv = model.wv
        self.backbone.vectors.copy_(torch.from_numpy(np.asarray(wv.vectors, dtype=np.float32)))
        if self.backbone.buckets:
            self.backbone.ngram_vectors.copy_(torch.from_numpy(np.asarray(wv.vectors_ngrams, dtype=np.float32)))
        self.backbone.set_vocabulary(list(wv.index_to_key))
