"""Every registered method for the same small budget on the same real data, on this machine.

    .venv/bin/python benchmarks/methods.py [--dataset digits|fashion-mnist] [--steps 150]

Prints one row per method: steps, img/s, final loss, weighted-kNN top-1 (k=20) of the frozen
downstream encoder on the dataset's test split, and the embedding spread (mean per-dimension std
of L2-normalised features times sqrt(dim): ~1 spread over the sphere, 0 collapsed). Raw pixels
and randomly initialised backbones are printed as baselines. CNN methods use small_cnn, ViT
methods a 6-block ViT-Tiny at dim 96 with 4x4 patches (16x16 inputs: 16 tokens); heads are
scaled to CPU size (CPU_OPTIONS), everything else is each method's paper default."""
from __future__ import annotations

import argparse
import logging
import time

import torch
import torch.nn.functional as F

from core.backbones import build_backbone
from core.data.builtin import load
from core.data.transforms import resize_images
from core.evaluate.features import extract_features, raw_pixels
from core.evaluate.knn import knn_accuracy
from core.methods import build, method_info, method_names
from core.train import Callbacks, TrainConfig, train

CNN = ("small_cnn", {"width": 32})
# Heads scaled to the CPU budget (the papers' 4096-8192-wide projectors would dominate the run);
# each method takes the names it has.
CPU_OPTIONS = {"proj_hidden_dim": 512, "proj_dim": 128, "pred_hidden_dim": 512, "out_dim": 1024, "bottleneck_dim": 128,
               "num_prototypes": 100, "queue_size": 4096, "support_size": 4096, "decoder_dim": 64, "decoder_depth": 2,
               "predictor_dim": 64, "predictor_depth": 2}
WIDE_PROJECTOR = {"barlow_twins", "vicreg"}  # their losses need a wide embedding
VIT = ("vit_tiny", {"dim": 96, "depth": 6, "heads": 3, "patch_size": 4})


class LastLog(Callbacks):
    def __init__(self):
        self.logs: dict = {}

    def on_log(self, step, logs):
        self.logs = logs


def spread(features: torch.Tensor) -> float:
    z = F.normalize(features, dim=1)
    return float(z.std(0).mean() * z.shape[1] ** 0.5)


def evaluate(encoder, train, test, mean, std) -> tuple[float, float]:
    train_x = extract_features(encoder, train.images, mean, std)
    test_x = extract_features(encoder, test.images, mean, std)
    return knn_accuracy(train_x, train.labels, test_x, test.labels, k=20), spread(test_x)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="digits", choices=["digits", "fashion-mnist"])
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--image-size", type=int, default=16)
    parser.add_argument("--train-items", type=int, default=10_000, help="subset of the train split")
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--methods", default="", help="comma-separated; default: all image methods")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(max(1, torch.get_num_threads()))

    train_set, test_set = load(args.dataset)
    train_set.images = resize_images(train_set.images[: args.train_items], args.image_size)
    train_set.labels = train_set.labels[: args.train_items]
    test_set.images = resize_images(test_set.images, args.image_size)
    mean = [float(train_set.images.float().mean() / 255)]
    std = [float(train_set.images.float().std() / 255)]
    names = [n for n in (args.methods.split(",") if args.methods else method_names())
             if method_info(n).modality == "image"]

    print(f"dataset {args.dataset}: {len(train_set.images)} train / {len(test_set.images)} test at "
          f"{args.image_size}x{args.image_size}; {args.steps} steps x batch {args.batch_size}; device {args.device}; "
          f"torch threads {torch.get_num_threads()}")
    header = f"{'method':16} {'backbone':10} {'steps':>5} {'img/s':>7} {'loss':>9} {'kNN@20':>7} {'std':>5} {'wall s':>6}"
    print(header)
    print("-" * len(header))
    raw = knn_accuracy(raw_pixels(train_set.images), train_set.labels, raw_pixels(test_set.images), test_set.labels)
    print(f"{'raw-pixels':16} {'-':10} {'-':>5} {'-':>7} {'-':>9} {raw:7.4f} {'-':>5} {'-':>6}")
    for arch, options in (CNN, VIT):
        torch.manual_seed(0)
        encoder = build_backbone(arch, 1, args.image_size, **options)
        acc, sd = evaluate(encoder, train_set, test_set, mean, std)
        print(f"{'random-init':16} {arch:10} {'-':>5} {'-':>7} {'-':>9} {acc:7.4f} {sd:5.2f} {'-':>6}")
    for name in names:
        arch, options = VIT if method_info(name).default_backbone.startswith("vit") else CNN
        torch.manual_seed(0)
        known = method_info(name).options()
        method_options = {k: v for k, v in CPU_OPTIONS.items() if k in known}
        if name in WIDE_PROJECTOR:
            method_options["proj_dim"] = 512
        method = build(name, backbone=arch, in_channels=1, image_size=args.image_size, mean=mean, std=std,
                       backbone_options=options, **method_options)
        config = TrainConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr, warmup_steps=args.steps // 10,
                             log_every=max(1, args.steps // 10), seed=0)
        recorder = LastLog()
        started = time.perf_counter()
        train(method, train_set.images, config, device=args.device, callbacks=recorder)
        wall = time.perf_counter() - started
        acc, sd = evaluate(method.downstream_encoder(), train_set, test_set, mean, std)
        print(f"{name:16} {arch:10} {args.steps:5d} {args.steps * args.batch_size / wall:7.0f} "
              f"{recorder.logs.get('loss', float('nan')):9.4f} {acc:7.4f} {sd:5.2f} {wall:6.1f}", flush=True)


if __name__ == "__main__":
    main()
