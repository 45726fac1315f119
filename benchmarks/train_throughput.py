"""Training throughput: our pipeline (uint8 data on the device, views made in batch on the
device, precision auto, channels_last and fused optimizers on GPUs) against a plain-PyTorch
baseline in the same run (torchvision transforms on PIL images in CPU DataLoader workers, fp32,
eager), on the same model and loss.

    .venv/bin/python -m benchmarks.train_throughput [--steps 10] [--configs simclr-r18-128,...]
        [--variants eager,compile,graphs]

Columns: img/s, the step split into data wait and compute, peak memory (GPU), achieved TFLOP/s
and MFU (GPU, with the device's peak bf16 rate when known). Variants of our pipeline: eager (the
default: compile auto), compile (torch.compile of the backbone), graphs (compile with CUDA
graphs; CUDA only). Targets: >= 1.5x the baseline on CPU for SimCLR ResNet-18 at 32 px, >= 3x and
>= 30 % MFU (ViT-S MAE) on a GPU. Images: sklearn's digits (bundled everywhere), upsampled."""
from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torch.utils.flop_counter import FlopCounterMode

from core.data.builtin import load
from core.data.transforms import resize_images
from core.losses.nt_xent import nt_xent
from core.methods import build
from core.train import Callbacks, TrainConfig, train

CONFIGS = {  # name: (method, backbone, batch, backbone options, image side)
    "simclr-r18-128": ("simclr", "resnet18", 128, {}, 32),
    "simclr-r18-512": ("simclr", "resnet18", 512, {}, 32),
    "mae-vits-128": ("mae", "vit_small", 128, {"patch_size": 4}, 32),
    "dino-vits-128": ("dino", "vit_small", 128, {"patch_size": 4}, 32),
    "mae-vits-224": ("mae", "vit_small", 256, {"patch_size": 16}, 224),  # the paper's geometry, for MFU
    "mae-vits-224-1024": ("mae", "vit_small", 1024, {"patch_size": 16}, 224),
}
VARIANTS = {"eager": {}, "compile": {"compile": "true"}, "graphs": {"cuda_graphs": True}}
PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0}
TARGET_CPU, TARGET_GPU = 1.5, 3.0


class Timer(Callbacks):
    def __init__(self, warmup: int):
        self.warmup, self.started, self.finished, self.logs = warmup, None, None, {}

    def should_stop(self, step):
        if step == self.warmup:
            self.started = time.perf_counter()
        return None

    def on_log(self, step, logs):
        self.logs = dict(logs)

    def on_checkpoint(self, step, state, final):
        self.finished = time.perf_counter()


def real_images(n: int, side: int) -> torch.Tensor:
    """n uint8 RGB images of side `side`: sklearn's digits, repeated to n and upsampled."""
    train_set, _ = load("digits")
    x = train_set.images.repeat((n + len(train_set.images) - 1) // len(train_set.images), 1, 1, 1)[:n]
    return resize_images(x, side).expand(-1, 3, -1, -1).contiguous()


def ours(config: str, images: torch.Tensor, device: torch.device, steps: int, warmup: int, variant: str) -> dict:
    method_name, backbone, batch, options, side = CONFIGS[config]
    torch.manual_seed(0)
    method = build(method_name, backbone=backbone, in_channels=3, image_size=side, backbone_options=options)
    timer = Timer(warmup)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    train(method, images, TrainConfig(steps=warmup + steps, batch_size=batch, optimizer="sgd", lr=0.05,
                                      precision="auto", log_every=warmup + steps, seed=1, **VARIANTS[variant]),
          device=device,
          callbacks=timer)
    seconds = timer.finished - timer.started
    return {"img_s": steps * batch / seconds, "data": timer.logs.get("data_wait", 0.0),
            "peak_mb": torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None,
            "seconds": seconds,
            "flops": step_flops(method, images[:batch].to(device), device) if variant == "eager" else None}


def step_flops(method, batch: torch.Tensor, device: torch.device) -> float:
    counter = FlopCounterMode(display=False)
    gen = torch.Generator(device=device).manual_seed(0)
    with counter:
        loss, _ = method.training_step(batch, gen, 0, 10)
        loss.backward()
    method.zero_grad(set_to_none=True)
    return float(counter.get_total_flops())


class PlainViews(Dataset):
    """The usual way: PIL images through torchvision transforms in DataLoader workers."""

    def __init__(self, images: torch.Tensor):
        from torchvision import transforms as T

        self.images = images.permute(0, 2, 3, 1).numpy()
        self.transform = T.Compose([T.RandomResizedCrop(32, scale=(0.08, 1.0)), T.RandomHorizontalFlip(),
                                    T.RandomApply([T.ColorJitter(0.4, 0.4, 0.2, 0.1)], p=0.8),
                                    T.RandomGrayscale(0.2), T.ToTensor(), T.Normalize([0.5] * 3, [0.25] * 3)])

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        image = Image.fromarray(np.ascontiguousarray(self.images[i]))
        return self.transform(image), self.transform(image)


def baseline(config: str, images: torch.Tensor, device: torch.device, steps: int, warmup: int, workers: int) -> dict:
    method_name, backbone, batch, options, side = CONFIGS[config]
    if method_name != "simclr":
        return {}
    torch.manual_seed(0)
    method = build("simclr", backbone=backbone, in_channels=3, image_size=side, backbone_options=options).to(device)
    optimizer = torch.optim.SGD(method.parameters(), lr=0.05, momentum=0.9)
    loader = DataLoader(PlainViews(images), batch_size=batch, shuffle=True, drop_last=True, num_workers=workers,
                        pin_memory=device.type == "cuda", persistent_workers=workers > 0)
    waited, done, started = 0.0, 0, None
    while done < warmup + steps:
        it = iter(loader)
        while done < warmup + steps:
            if done == warmup:
                started, waited = time.perf_counter(), 0.0
            asked = time.perf_counter()
            try:
                v1, v2 = next(it)
            except StopIteration:
                break
            v1, v2 = v1.to(device, non_blocking=True), v2.to(device, non_blocking=True)
            waited += time.perf_counter() - asked
            loss = nt_xent(method.projector(method.backbone(v1)), method.projector(method.backbone(v2)), 0.2)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            done += 1
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - started
    return {"img_s": steps * batch / seconds, "data": waited / seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", default=None, help=f"comma-separated of {', '.join(CONFIGS)}")
    parser.add_argument("--steps", type=int, default=None, help="timed steps (default 5 on CPU, 50 on GPU)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1),
                        help="DataLoader workers of the baseline (default: the cores, at most 8)")
    parser.add_argument("--variants", default="eager", help=f"comma-separated of {', '.join(VARIANTS)}")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    steps = args.steps or (50 if device.type == "cuda" else 5)
    configs = args.configs.split(",") if args.configs else (list(CONFIGS) if device.type == "cuda" else ["simclr-r18-128"])
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    peak = next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)
    variants = args.variants.split(",")
    print(f"train throughput on {name}, {steps} timed steps after {args.warmup}; baseline: torchvision in "
          f"{args.workers} DataLoader workers, fp32, eager")
    print(f"{'config':<16} {'pipeline':<15} {'img/s':>8} {'data wait':>9} {'peak MB':>8} {'TFLOP/s':>8} {'MFU':>6} "
          f"{'vs plain':>8}")
    for config in configs:
        images = real_images(CONFIGS[config][2] * 4, CONFIGS[config][4])
        plain = baseline(config, images, device, steps, args.warmup, args.workers)
        flops = None  # per step, counted on the eager variant (compiled graphs hide their ops from the counter)
        for variant in variants:
            try:
                mine = ours(config, images, device, steps, args.warmup, variant)
            except Exception as exc:  # a variant this device or torch cannot run: say so, go on
                print(f"{config:<16} {'ours-' + variant:<15} failed: {type(exc).__name__}: {str(exc)[:200]}")
                continue
            flops = mine["flops"] or flops
            tflops = flops * steps / mine["seconds"] / 1e12 if flops else float("nan")
            mfu = f"{tflops / peak:.0%}" if peak and flops else "-"
            peak_mb = f"{mine['peak_mb']:.0f}" if mine["peak_mb"] is not None else "-"
            ratio = f"{mine['img_s'] / plain['img_s']:.2f}x" if plain else "-"
            print(f"{config:<16} {'ours-' + variant:<15} {mine['img_s']:>8.1f} {mine['data']:>8.0%} {peak_mb:>8} "
                  f"{tflops:>8.2f} {mfu:>6} {ratio:>8}", flush=True)
        if plain:
            print(f"{config:<16} {'plain':<15} {plain['img_s']:>8.1f} {plain['data']:>8.0%} {'-':>8} {'-':>8} "
                  f"{'-':>6} {'1.00x':>8}", flush=True)
    target = TARGET_GPU if device.type == "cuda" else TARGET_CPU
    print(f"target: ours >= {target}x the plain baseline for simclr-r18 on this device")


if __name__ == "__main__":
    main()
