"""Uncurated vs curated pretraining at one fixed CPU budget: SwAV with its `seer` recipe (at a tiny
RegNetY) on a long-tailed, unlabelled subset of a dataset's training split, against the same method
on a class-balanced subset of the same size, both scored by kNN and a linear probe on the balanced,
labelled test split.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/uncurated.py [--budget-s 120] [--alpha 1.0]
        [--dataset fashion-mnist|digits] [--batch-size 128] [--seed 0] [--scale seer|small]

In-process, through the library (core.recipes.resolve, core.methods.build_resolved, core.train):
the service adds nothing to the measurement (tests/datasets/test_uncurated.py runs the same flow
through HTTP). One thread; the budget is CPU seconds of this process (time.process_time), so the
machine's other load changes the wall time, not the work. A calibration run measures the CPU time
of a step; both arms then train that many steps (same model, batch and crops: the same work), and
their measured CPU seconds are printed. Evaluation features come from a balanced 10k of the
training split (kNN k=20, linear probe) and the test split, outside the budget. A random-init row of
the same backbone is the floor."""
from __future__ import annotations

import argparse
import logging
import time

import numpy as np
import torch

from core.data.arrays import DatasetUnavailable
from core.data.builtin import digits, fashion_mnist
from core.data.long_tail import long_tailed_indices
from core.evaluate.features import extract_features
from core.evaluate.protocols import run_protocol
from core.methods import build_resolved
from core.recipes import resolve
from core.train import TrainConfig, train

log = logging.getLogger("benchmarks.uncurated")
DESIGN = {"depth": 6, "w_0": 16, "w_a": 8.0, "w_m": 2.0, "group_width": 8}  # a tiny RegNetY for a CPU
# SEER's head is 8192-8192-256 with 16k prototypes for 1e9 images; sized down for 2e4 (SEER's README:
# "the number of clusters for SwAV might need to be adjusted" to the data size)
HEAD = {"proj_hidden_dim": 256, "proj_dim": 64, "num_prototypes": 100}


def load(name: str):
    if name == "fashion-mnist":
        try:
            return "fashion-mnist", *fashion_mnist()
        except DatasetUnavailable as exc:
            log.warning("%s; using digits", exc)
    return "digits", *digits()


def balanced(labels: np.ndarray, per_class: int, rng: np.random.Generator) -> np.ndarray:
    return np.sort(np.concatenate([rng.permutation(np.nonzero(labels == c)[0])[:per_class]
                                   for c in np.unique(labels)]))


def recipe_for(scale: str, n_items: int, image_size: int, steps: int, batch_size: int) -> dict:
    """SwAV's `scale` recipe (seer; or small, SwAV's CIFAR-sized one with 2 crops) at the tiny RegNetY."""
    return resolve("swav", image_size, n_items, {"scale": scale, "backbone": "regnet_y",
                                                 "backbone_options": DESIGN, "batch_size": batch_size,
                                                 "steps": steps, "method_options": HEAD})


def pretrain(scale: str, images: torch.Tensor, steps: int, batch_size: int, seed: int):
    """(method, CPU seconds) of SwAV-seer on these unlabelled images."""
    x = images.float() / 255
    mean, std = [float(x.mean())], [float(x.std())]
    recipe = recipe_for(scale, len(images), images.shape[-1], steps, batch_size)
    torch.manual_seed(seed)
    method = build_resolved(recipe, in_channels=1, mean=mean, std=std)
    start = time.process_time()
    result = train(method, images, TrainConfig(**{**recipe["train"], "seed": seed, "log_every": max(1, steps // 5)}))
    return method, time.process_time() - start, result, (mean, std)


def scores(encoder, norm, eval_train, eval_test) -> dict:
    mean, std = norm
    train_x = extract_features(encoder, eval_train.images, mean, std)
    test_x = extract_features(encoder, eval_test.images, mean, std)
    knn = run_protocol("knn", train_x, eval_train.labels, test_x, eval_test.labels, k=[20])["top1@k20"]
    linear = run_protocol("linear", train_x, eval_train.labels, test_x, eval_test.labels)["top1"]
    return {"knn": knn, "linear": linear}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget-s", type=float, default=120.0, help="CPU seconds of pretraining per arm")
    parser.add_argument("--alpha", type=float, default=1.0, help="power-law exponent of the long tail")
    parser.add_argument("--dataset", default="fashion-mnist", choices=["fashion-mnist", "digits"])
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scale", default="seer", choices=["seer", "small"], help="SwAV's recipe")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(1)
    name, train_set, test_set = load(args.dataset)
    labels = train_set.labels.numpy()
    rng = np.random.default_rng(args.seed)

    tail = long_tailed_indices(labels, args.alpha, seed=args.seed)
    curated = balanced(labels, len(tail) // len(np.unique(labels)), rng)
    eval_train = train_set.subset(torch.from_numpy(balanced(labels, 1000, rng)))
    arms = {"uncurated (long-tailed, labels dropped)": tail, "curated (class-balanced)": curated}

    calibration_steps = 5
    _, cpu, _, _ = pretrain(args.scale, train_set.images[curated], calibration_steps, args.batch_size, args.seed)
    steps = max(1, int(args.budget_s / (cpu / calibration_steps)))
    log.info("calibration: %.2f CPU-s a step -> %d steps of batch %d per arm", cpu / calibration_steps, steps,
             args.batch_size)

    rows = []
    for arm, index in arms.items():
        counts = np.bincount(labels[index], minlength=int(labels.max()) + 1)
        method, cpu, result, norm = pretrain(args.scale, train_set.images[index], steps, args.batch_size, args.seed)
        encoder = method.downstream_encoder()
        rows.append((arm, len(index), f"{counts.max()}/{counts.min()}", steps, cpu, result.reason,
                     scores(encoder, norm, eval_train, test_set)))
        log.info("%s: %s", arm, rows[-1])
    torch.manual_seed(args.seed)
    random_init = build_resolved(recipe_for(args.scale, len(curated), train_set.images.shape[-1], 1, args.batch_size),
                                 in_channels=1).downstream_encoder()
    x = train_set.images[curated].float() / 255
    rows.append(("random-init (no pretraining)", 0, "-", 0, 0.0, "-",
                 scores(random_init, ([float(x.mean())], [float(x.std())]), eval_train, test_set)))

    print(f"\n{name}: SwAV `{args.scale}` recipe, regnet_y {DESIGN}, head {HEAD}, batch {args.batch_size}, "
          f"long tail alpha {args.alpha}, budget {args.budget_s:g} CPU-s per arm, 1 thread, seed {args.seed}")
    print(f"evaluation: balanced {len(eval_train.labels)} of the training split -> "
          f"{len(test_set.labels)} test images\n")
    print("| pretraining data | images | largest/smallest class | steps | CPU-s | end | kNN top-1 (k=20) "
          "| linear top-1 |")
    print("|---|---|---|---|---|---|---|---|")
    for arm, n, ratio, n_steps, cpu, reason, values in rows:
        print(f"| {arm} | {n} | {ratio} | {n_steps} | {cpu:.0f} | {reason} | {values['knn']:.3f} | "
              f"{values['linear']:.3f} |")


if __name__ == "__main__":
    main()
