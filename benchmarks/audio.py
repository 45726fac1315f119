"""wav2vec 2.0's small recipe on spoken-words for a CPU budget, then kNN / linear probe / k-means
NMI on the word labels for the trained encoder, the same encoder at random init, and MFCCs.

    PYTHONPATH=$PWD .venv/bin/python benchmarks/audio.py [--budget-s 120] [--seed 0]"""
from __future__ import annotations

import argparse
import tempfile
import time

import torch

from core.data.spoken_words import build_spoken_words
from core.evaluate.audio import audio_features, mfcc_features
from core.evaluate.protocols import run_protocol
from core.methods.wav2vec2 import build_audio
from core.recipes import resolve
from core.train import TrainConfig, train

MAX_SAMPLES = 16_000  # 1 s: spoken-words clips are 0.5-1.2 s


def scores(train_x, train_y, test_x, test_y) -> dict[str, float]:
    out = run_protocol("knn", train_x, train_y, test_x, test_y, k=[20])
    out.update({f"linear_{k}": v for k, v in run_protocol("linear", train_x, train_y, test_x, test_y).items()})
    out.update(run_protocol("clustering", train_x, train_y, test_x, test_y))
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--budget-s", type=float, default=120.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache", default=None, help="spoken-words cache folder (default $DARKMATTER_HOME)")
    args = parser.parse_args()
    started = time.perf_counter()
    train_set, test_set, info = build_spoken_words(args.cache or tempfile.gettempdir())
    print(f"spoken-words: {len(train_set)} train / {len(test_set)} test clips ({time.perf_counter() - started:.0f} s)")
    clips = train_set.padded(MAX_SAMPLES)

    def method(seed):
        torch.manual_seed(seed)
        return build_audio(recipe)

    recipe = resolve("wav2vec2", 0, len(clips), {"scale": "small", "steps": 3})
    probe = method(args.seed)
    t0 = time.perf_counter()
    train(probe, clips, TrainConfig(**{**recipe["train"], "seed": args.seed, "log_every": 1}))
    step_s = (time.perf_counter() - t0) / 3
    steps = max(5, int(args.budget_s / step_s))
    recipe = resolve("wav2vec2", 0, len(clips), {"scale": "small", "steps": steps, "schedule_points": "proportional"})
    trained, logs = method(args.seed), []

    class Log:
        def on_log(self, step, values):
            logs.append((step, values))

        def should_stop(self, step):
            return None

        def on_checkpoint(self, step, state, final):
            pass

    t0 = time.perf_counter()
    result = train(trained, clips, TrainConfig(**{**recipe["train"], "seed": args.seed, "log_every": 10}), callbacks=Log())
    seconds = time.perf_counter() - t0
    print(f"trained {result.step} steps of {recipe['train']['batch_size']} clips in {seconds:.0f} s: "
          f"{result.step * recipe['train']['batch_size'] / seconds:.1f} clips/s")
    for step, values in logs[:: max(1, len(logs) // 6)] + logs[-1:]:
        print(f"  step {step:4d} loss {values['loss']:.3f} contrastive {values['contrastive']:.3f} "
              f"prob_ppl {values['prob_perplexity']:.0f} code_ppl {values['code_perplexity']:.0f} "
              f"temp {values['gumbel_temperature']:.3f}")
    rows = {}
    for name, features in (("wav2vec2 (trained)", lambda d: audio_features(trained.backbone, d, max_samples=MAX_SAMPLES)),
                           ("wav2vec2 (random init)", lambda d: audio_features(method(args.seed).backbone, d,
                                                                              max_samples=MAX_SAMPLES)),
                           ("MFCC mean+std", mfcc_features)):
        rows[name] = scores(features(train_set), train_set.labels, features(test_set), test_set.labels)
    names = list(next(iter(rows.values())))
    print(f"\n{'features':24s}" + "".join(f"{n:>14s}" for n in names))
    for name, values in rows.items():
        print(f"{name:24s}" + "".join(f"{values[n]:14.3f}" for n in names))
    print(f"(test: {len(test_set)} clips of {len(set(info['test_voices']))} unseen voices, 30 words; chance 0.033)")


if __name__ == "__main__":
    main()
