"""Text methods on WordNet glosses (Debian's wordnet-base) on this machine's CPU.

    .venv/bin/python benchmarks/text.py [--methods mlm,simcse] [--budget-s 420] [--eval-train 10000]

Each method's `tiny` recipe (text_tiny: BERT-Tiny's 2 layers x 128, BPE vocabulary of 8,000
trained on the training split, 64 tokens) trains on the 86,294 training glosses until its step
budget or --budget-s seconds, whichever comes first, in the one training loop. Then, on the
frozen encoder: masked-token accuracy and perplexity on the 9,588 test glosses (mlm, against the
unigram model of the training split), and the 41-way lexicographer-file task: weighted kNN
(k=20) and a linear probe fitted on --eval-train training glosses, and k-means NMI on the test
glosses, with the TF-IDF (LSA, 256 dims) and random-init baselines through the same protocols."""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from core.backbones import build_backbone
from core.data.text_batches import TokenBatches, TokenizedCorpus
from core.data.wordnet import wordnet_glosses
from core.evaluate.protocols import run_protocol
from core.evaluate.text import masked_token_scores, text_features, tfidf_features, unigram_counts
from core.methods import build_resolved
from core.recipes import resolve
from core.text.tokenizer import train_tokenizer
from core.train import Callbacks, TrainConfig, train

STEPS = {"mlm": 6000, "simcse": 4000, "mlm+simcse": 4000}  # more than --budget-s allows on 2 CPU cores: the clock decides


class Budget(Callbacks):
    def __init__(self, seconds: float):
        self.deadline, self.logs = time.monotonic() + seconds, {}

    def on_log(self, step, logs):
        self.logs = logs

    def should_stop(self, step):
        return "budget" if time.monotonic() > self.deadline else None


def probe(train_x, train_y, test_x, test_y) -> dict:
    out = {"knn": run_protocol("knn", train_x, train_y, test_x, test_y, k=[20])["top1@k20"],
           "linear": run_protocol("linear", train_x, train_y, test_x, test_y)["top1"],
           "nmi": run_protocol("clustering", train_x, train_y, test_x, test_y, n_init=1)["nmi"]}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", default="mlm,simcse")
    parser.add_argument("--budget-s", type=float, default=420.0, help="training seconds per method")
    parser.add_argument("--eval-train", type=int, default=10000, help="training glosses the probes fit on")
    parser.add_argument("--threads", type=int, default=1,
                        help="intra-op threads (1: no OpenMP barrier waits on a shared machine)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    train_set, test_set = wordnet_glosses()
    started = time.perf_counter()
    tokenizer = train_tokenizer(train_set.texts, 8000, "bpe")
    corpus = TokenizedCorpus.from_texts(tokenizer, train_set.texts, 64)
    test_corpus = TokenizedCorpus.from_texts(tokenizer, test_set.texts, 64)
    pick = np.random.default_rng(args.seed).permutation(len(train_set))[: args.eval_train]
    probe_corpus = corpus.subset(pick)
    train_y = torch.tensor(train_set.labels)[torch.from_numpy(pick)]
    test_y = torch.tensor(test_set.labels)
    counts = unigram_counts(corpus, 8000)
    print(f"wordnet-glosses: {len(corpus)} train / {len(test_corpus)} test glosses, {len(train_set.classes)} classes; "
          f"BPE 8000 trained in {time.perf_counter() - started:.1f}s; {corpus.n_tokens() / len(corpus):.1f} tokens per "
          f"gloss; probes fit on {len(pick)}; torch threads {torch.get_num_threads()}", flush=True)

    rows = []
    t = time.perf_counter()
    tfidf_train, tfidf_test = tfidf_features([train_set.texts[i] for i in pick], test_set.texts)
    rows.append({"name": "tfidf", "steps": 0, "train_s": 0.0, **probe(tfidf_train, train_y, tfidf_test, test_y),
                 "eval_s": time.perf_counter() - t})
    torch.manual_seed(args.seed)
    random_init = build_backbone("text_tiny", vocab_size=8000, max_length=64)
    t = time.perf_counter()
    rows.append({"name": "random-init", "steps": 0, "train_s": 0.0, "eval_s": 0.0,
                 **probe(text_features(random_init, probe_corpus), train_y, text_features(random_init, test_corpus),
                         test_y)})
    rows[-1]["eval_s"] = time.perf_counter() - t
    rows[-1]["unigram"] = masked_token_scores(random_init, build_resolved(resolve("mlm", 0, len(corpus))).head,
                                              test_corpus, counts, seed=args.seed)["unigram"]
    print_row(rows[0])
    print_row(rows[1])

    for name in args.methods.split(","):
        recipe = resolve(name, 0, len(corpus), {"steps": STEPS[name]})
        torch.manual_seed(args.seed)
        method = build_resolved(recipe)
        method.backbone.set_tokenizer(tokenizer)
        config = TrainConfig(**{**recipe["train"], "seed": args.seed, "log_every": 50})
        budget = Budget(args.budget_s)
        t = time.perf_counter()
        result = train(method, TokenBatches(corpus), config, callbacks=budget)
        row = {"name": name, "steps": result.step, "train_s": time.perf_counter() - t, "loss": budget.logs.get("loss")}
        t = time.perf_counter()
        encoder = method.downstream_encoder()
        if hasattr(method, "head"):  # an MLM head
            row["mlm"] = masked_token_scores(encoder, method.head, test_corpus, counts, seed=args.seed)["model"]
        row.update(probe(text_features(encoder, probe_corpus), train_y, text_features(encoder, test_corpus), test_y))
        row["eval_s"] = time.perf_counter() - t
        rows.append(row)
        print_row(row)
    unigram = rows[1]["unigram"]
    print(f"\nunigram model of the training split: masked-token accuracy {unigram['accuracy']:.3f}, "
          f"perplexity {unigram['perplexity']:.0f} ({int(unigram['masked_tokens'])} masked test tokens)")


def print_row(row: dict) -> None:
    if row["name"] == "tfidf":
        print(f"\n{'source':12} {'steps':>6} {'train s':>8} {'MLM acc':>8} {'MLM ppl':>8} {'kNN@20':>7} {'linear':>7} "
              f"{'NMI':>6} {'eval s':>7}")
    mlm = row.get("mlm") or {}
    acc = f"{mlm['accuracy']:.3f}" if mlm else "-"
    ppl = f"{mlm['perplexity']:.0f}" if mlm else "-"
    print(f"{row['name']:12} {row['steps']:>6} {row['train_s']:>8.0f} {acc:>8} {ppl:>8} {row['knn']:>7.3f} "
          f"{row['linear']:>7.3f} {row['nmi']:>6.3f} {row['eval_s']:>7.0f}", flush=True)


if __name__ == "__main__":
    main()
