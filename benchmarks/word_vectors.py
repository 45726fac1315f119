"""Static word vectors beside the text encoders on WordNet glosses (Debian's wordnet-base), on
this machine's CPU.

    .venv/bin/python -m benchmarks.word_vectors [--methods word2vec,word2vec_cbow,fasttext,glove]
        [--text-methods mlm,simcse] [--budget-s 240] [--eval-train 10000]

word2vec (skip-gram and CBOW) and fastText train with their `small` recipes (gensim, one thread)
on the 86,294 training glosses; GloVe's `small` recipe trains in the one loop (AdaGrad) until its
epochs or --budget-s, whichever comes first; mlm and simcse (`tiny`) train for --budget-s as in
benchmarks/text.py. A gloss is the mean of its words' unit-normalised vectors (unknown words
skipped). Then the 41-way lexicographer-file task as benchmarks/text.py runs it (weighted kNN k=20
and a linear probe fitted on --eval-train training glosses, k-means NMI on the 9,588 test
glosses), TF-IDF beside them, and the WordNet word-similarity score of every model's word vectors
(core/evaluate/word_similarity.py; for mlm/simcse the input embeddings of whole-word tokens)."""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from benchmarks.text import Budget, probe
from core.data.text_batches import TokenBatches, TokenizedCorpus
from core.data.wordnet import wordnet_glosses
from core.evaluate.text import text_features, tfidf_features
from core.evaluate.word_similarity import token_words, word_similarity, wordnet_synonym_pairs
from core.methods import build_resolved
from core.recipes import resolve, words_budget
from core.text.cooccurrence import CooccurrenceBatches, cooccurrence
from core.text.tokenizer import train_tokenizer
from core.text.words import count_words, vocabulary
from core.train import TrainConfig, train

TEXT_STEPS = {"mlm": 6000, "simcse": 4000}  # more than the budget allows on 2 cores: the clock decides


def train_words(name: str, texts: list[str], seed: int, budget_s: float):
    """(WordVectors, steps, train seconds, detail) for a word-vector method's small recipe."""
    recipe = resolve(name, 0, len(texts))
    words = vocabulary(count_words(texts), recipe["method_options"]["min_count"])
    recipe["backbone_options"]["vocab_size"] = len(words)
    torch.manual_seed(seed)
    method = build_resolved(recipe)
    started = time.perf_counter()
    if name != "glove":
        words_budget(recipe, len(texts))
        method.fit(texts, recipe["train"]["lr"], recipe["train"]["final_lr"], int(recipe["epochs"]), seed)
        return method.backbone, int(recipe["epochs"]), time.perf_counter() - started, f"{len(words)} words"
    method.backbone.set_vocabulary(words)
    entries = CooccurrenceBatches(*cooccurrence(texts, method.backbone.index, recipe["method_options"]["window"]))
    words_budget(recipe, entries.steps_per_epoch(recipe["train"]["batch_size"]))
    config = TrainConfig(**{**recipe["train"], "seed": seed, "log_every": 100, "precision": "fp32"})
    budget = Budget(budget_s)
    result = train(method, entries, config, callbacks=budget)
    epochs = result.step / recipe["steps_per_epoch"]
    return (method.backbone, result.step, time.perf_counter() - started,
            f"{len(words)} words, {len(entries)} entries, {epochs:.1f} of {recipe['epochs']} epochs, "
            f"cost {budget.logs.get('cost', float('nan')):.4f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", default="word2vec,word2vec_cbow,fasttext,glove")
    parser.add_argument("--text-methods", default="mlm,simcse")
    parser.add_argument("--budget-s", type=float, default=240.0, help="training seconds for glove, mlm, simcse")
    parser.add_argument("--eval-train", type=int, default=10000, help="training glosses the probes fit on")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    train_set, test_set = wordnet_glosses()
    pairs = wordnet_synonym_pairs()
    pick = np.random.default_rng(args.seed).permutation(len(train_set))[: args.eval_train]
    probe_texts = [train_set.texts[i] for i in pick]
    train_y = torch.tensor(train_set.labels)[torch.from_numpy(pick)]
    test_y = torch.tensor(test_set.labels)
    print(f"wordnet-glosses: {len(train_set)} train / {len(test_set)} test glosses, {len(train_set.classes)} classes; "
          f"probes fit on {len(pick)}; {len(pairs)} WordNet synonym pairs; torch threads {torch.get_num_threads()}",
          flush=True)
    rows = []
    t = time.perf_counter()
    tfidf_train, tfidf_test = tfidf_features(probe_texts, test_set.texts)
    rows.append({"name": "tfidf (LSA 256)", "steps": "-", "train_s": 0.0, "eval_s": time.perf_counter() - t,
                 **probe(tfidf_train, train_y, tfidf_test, test_y)})
    print_row(rows[-1])

    for name in filter(None, args.methods.split(",")):
        vectors, steps, seconds, detail = train_words(name, train_set.texts, args.seed, args.budget_s)
        t = time.perf_counter()
        train_x, test_x = vectors.embed(probe_texts)[0], vectors.embed(test_set.texts)
        no_word = sum(not v.any() for v in test_x[0])
        row = {"name": name, "steps": steps, "train_s": seconds, **probe(train_x, train_y, test_x[0], test_y),
               "similarity": word_similarity(vectors.words, vectors.word_matrix().detach(), pairs, seed=args.seed),
               "detail": f"{detail}; {no_word} test glosses without a known word"}
        row["eval_s"] = time.perf_counter() - t
        rows.append(row)
        print_row(row)

    if args.text_methods:
        tokenizer = train_tokenizer(train_set.texts, 8000, "bpe")
        corpus = TokenizedCorpus.from_texts(tokenizer, train_set.texts, 64)
        test_corpus = TokenizedCorpus.from_texts(tokenizer, test_set.texts, 64)
        probe_corpus = corpus.subset(pick)
    for name in filter(None, args.text_methods.split(",")):
        recipe = resolve(name, 0, len(corpus), {"steps": TEXT_STEPS[name]})
        torch.manual_seed(args.seed)
        method = build_resolved(recipe)
        method.backbone.set_tokenizer(tokenizer)
        config = TrainConfig(**{**recipe["train"], "seed": args.seed, "log_every": 50})
        t = time.perf_counter()
        result = train(method, TokenBatches(corpus), config, callbacks=Budget(args.budget_s))
        row = {"name": name, "steps": result.step, "train_s": time.perf_counter() - t}
        t = time.perf_counter()
        encoder = method.downstream_encoder()
        row.update(probe(text_features(encoder, probe_corpus), train_y, text_features(encoder, test_corpus), test_y))
        words, embedding = token_words(tokenizer, encoder.token_embed.weight.detach())
        row["similarity"] = word_similarity(words, embedding, pairs, seed=args.seed)
        row["detail"] = f"input embeddings of {len(words)} whole-word BPE tokens"
        row["eval_s"] = time.perf_counter() - t
        rows.append(row)
        print_row(row)

    print("\n| source | steps | train s | kNN@20 | linear top-1 | NMI |\n|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['name']} | {row['steps']} | {row['train_s']:.0f} | {row['knn']:.3f} | {row['linear']:.3f} | "
              f"{row['nmi']:.3f} |")
    print("\n| source | synonym AUC | synonym MRR | median rank | pairs | vocabulary | notes |\n|---|---|---|---|---|---|---|")
    for row in rows[1:]:
        s = row["similarity"]
        print(f"| {row['name']} | {s['synonym_auc']:.3f} | {s['synonym_mrr']:.4f} | {s['median_rank']:.0f} | "
              f"{int(s['pairs'])} | {int(s['vocabulary'])} | {row['detail']} |")


def print_row(row: dict) -> None:
    similarity = row.get("similarity")
    extra = (f"  synonym AUC {similarity['synonym_auc']:.3f} MRR {similarity['synonym_mrr']:.4f} "
             f"({int(similarity['pairs'])} pairs)" if similarity else "")
    print(f"{row['name']:16} steps {row['steps']!s:>6} train {row['train_s']:6.0f}s  kNN@20 {row['knn']:.3f} "
          f"linear {row['linear']:.3f} NMI {row['nmi']:.3f}  eval {row['eval_s']:.0f}s{extra}  {row.get('detail', '')}",
          flush=True)


if __name__ == "__main__":
    main()
