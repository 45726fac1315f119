"""Training throughput: our pipeline (uint8 data on the device, views made in batch on the
device, precision auto, channels_last and fused optimizers on GPUs) against a strong plain-PyTorch
baseline in the same run: what a competent user writes (torchvision transforms on PIL images in
one DataLoader worker per core, pinned memory, persistent workers; bf16 autocast where the device
has native bf16, channels_last for convnets, the fused optimizer on GPUs), same model and loss.

    .venv/bin/python -m benchmarks.train_throughput [--steps 10] [--configs simclr-r18-128,...]
        [--variants eager,compile,graphs,whole,whole-graphs] [--batch 256,512,1024] [--quick]

Columns: img/s, the step split into data wait and compute, peak memory (GPU), achieved TFLOP/s
and MFU (FLOPs of one eager step counted by torch's FlopCounterMode over the time, against the
device's peak dense bf16 rate; n/a where the peak is unknown, as on CPUs). Variants of our
pipeline: eager (the default: compile auto), compile (torch.compile of the backbone), graphs
(compile with CUDA graphs; CUDA only), whole (the step from views to backward as one graph,
core/step.py), whole-graphs (that graph replayed as a CUDA graph). --quick: a tiny CNN at 16 px
for two steps, so that the code runs anywhere. Targets: >= 1.5x the baseline on CPU for SimCLR ResNet-18 at 32 px, >= 3x and
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
from core.precision import resolve_precision
from core.train import Callbacks, TrainConfig, _convolutional, train

CONFIGS = {  # name: (method, backbone, batch, backbone options, image side)
    "simclr-r18-128": ("simclr", "resnet18", 128, {}, 32),
    "simclr-r18-512": ("simclr", "resnet18", 512, {}, 32),
    "mae-vits-128": ("mae", "vit_small", 128, {"patch_size": 4}, 32),
    "dino-vits-128": ("dino", "vit_small", 128, {"patch_size": 4}, 32),
    "mae-vits-224": ("mae", "vit_small", 256, {"patch_size": 16}, 224),  # the paper's geometry, for MFU
    "mae-vits-224-1024": ("mae", "vit_small", 1024, {"patch_size": 16}, 224),
    "simclr-cnn-quick": ("simclr", "small_cnn", 32, {"width": 8}, 16),  # --quick
}
VARIANTS = {"eager": {}, "compile": {"compile": "true"}, "graphs": {"cuda_graphs": True},
            "whole": {"compile": "whole"}, "whole-graphs": {"compile": "whole", "cuda_graphs": True}}
PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0}  # dense, TFLOP/s
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


def ours(spec: tuple, images: torch.Tensor, device: torch.device, steps: int, warmup: int, variant: str) -> dict:
    method_name, backbone, batch, options, side = spec
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
        self.transform = T.Compose([T.RandomResizedCrop(images.shape[-1], scale=(0.08, 1.0)), T.RandomHorizontalFlip(),
                                    T.RandomApply([T.ColorJitter(0.4, 0.4, 0.2, 0.1)], p=0.8),
                                    T.RandomGrayscale(0.2), T.ToTensor(), T.Normalize([0.5] * 3, [0.25] * 3)])

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        image = Image.fromarray(np.ascontiguousarray(self.images[i]))
        return self.transform(image), self.transform(image)


def baseline(spec: tuple, images: torch.Tensor, device: torch.device, steps: int, warmup: int, workers: int) -> dict:
    method_name, backbone, batch, options, side = spec
    if method_name != "simclr":
        return {}
    torch.manual_seed(0)
    method = build("simclr", backbone=backbone, in_channels=3, image_size=side, backbone_options=options).to(device)
    autocast = resolve_precision("auto", device) == "bf16"
    channels_last = _convolutional(method)
    if channels_last:
        method.to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(method.parameters(), lr=0.05, momentum=0.9,
                                **({"fused": True} if device.type == "cuda" else {"foreach": True}))
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
            if channels_last:
                v1, v2 = v1.contiguous(memory_format=torch.channels_last), v2.contiguous(memory_format=torch.channels_last)
            waited += time.perf_counter() - asked
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
                loss = nt_xent(method.projector(method.backbone(v1)), method.projector(method.backbone(v2)), 0.2)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            done += 1
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - started
    return {"img_s": steps * batch / seconds, "data": waited / seconds,
            "setup": f"bf16={autocast} channels_last={channels_last} fused={device.type == 'cuda'}"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", default=None, help=f"comma-separated of {', '.join(CONFIGS)}")
    parser.add_argument("--steps", type=int, default=None, help="timed steps (default 5 on CPU, 50 on GPU)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                        help="DataLoader workers of the baseline (default: one per core)")
    parser.add_argument("--variants", default="eager", help=f"comma-separated of {', '.join(VARIANTS)}")
    parser.add_argument("--batch", default=None, help="comma-separated batch sizes (e.g. 256,512,1024) that "
                                                      "replace each config's own")
    parser.add_argument("--quick", action="store_true", help="a tiny CNN at 16 px, 2 timed steps: exercises the code")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if args.quick:
        args.configs, args.steps, args.warmup = args.configs or "simclr-cnn-quick", args.steps or 2, 1
    steps = args.steps or (50 if device.type == "cuda" else 5)
    configs = args.configs.split(",") if args.configs else (
        [c for c in CONFIGS if c != "simclr-cnn-quick"] if device.type == "cuda" else ["simclr-r18-128"])
    unknown = [c for c in configs if c not in CONFIGS] + [v for v in args.variants.split(",") if v not in VARIANTS]
    if unknown:
        parser.error(f"unknown config or variant: {', '.join(unknown)}")
    batches = [int(b) for b in args.batch.split(",")] if args.batch else [None]
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    peak = peak_tflops(name)
    print(f"train throughput on {name}, {steps} timed steps after {args.warmup}; peak bf16 "
          f"{f'{peak:.0f} TFLOP/s' if peak else 'n/a'}; baseline: torchvision in {args.workers} DataLoader workers, "
          f"pinned on GPUs, persistent")
    print(f"{'config':<18} {'batch':>5} {'pipeline':<18} {'img/s':>8} {'data wait':>9} {'peak MB':>8} {'TFLOP/s':>8} "
          f"{'MFU':>6} {'vs plain':>8}")
    for config in configs:
        for batch in batches:
            spec = CONFIGS[config] if batch is None else (*CONFIGS[config][:2], batch, *CONFIGS[config][3:])
            run_config(config, spec, device, steps, args, peak)
    target = TARGET_GPU if device.type == "cuda" else TARGET_CPU
    print(f"target: ours >= {target}x the plain baseline for simclr-r18 on this device")


def peak_tflops(device_name: str) -> float | None:
    return next((v for k, v in PEAK_BF16_TFLOPS.items() if k in device_name), None)


def mfu(flops: float | None, seconds_per_step: float, peak: float | None) -> tuple[str, str]:
    """(achieved TFLOP/s, MFU) as printed: n/a where the FLOPs or the device's peak are unknown."""
    if not flops:
        return "n/a", "n/a"
    tflops = flops / seconds_per_step / 1e12
    return f"{tflops:.2f}", (f"{tflops / peak:.1%}" if peak else "n/a")


def run_config(config: str, spec: tuple, device: torch.device, steps: int, args, peak: float | None) -> None:
    batch = spec[2]
    images = real_images(batch * 4, spec[4])
    plain = baseline(spec, images, device, steps, args.warmup, args.workers)
    flops = None  # per step, counted on the eager variant (compiled graphs hide their ops from the counter)
    for variant in args.variants.split(","):
        try:
            mine = ours(spec, images, device, steps, args.warmup, variant)
        except Exception as exc:  # a variant this device or torch cannot run: say so, go on
            print(f"{config:<18} {batch:>5} {'ours-' + variant:<18} failed: {type(exc).__name__}: {str(exc)[:200]}")
            continue
        flops = mine["flops"] or flops
        tflops, share = mfu(flops, mine["seconds"] / steps, peak)
        peak_mb = f"{mine['peak_mb']:.0f}" if mine["peak_mb"] is not None else "-"
        ratio = f"{mine['img_s'] / plain['img_s']:.2f}x" if plain else "-"
        print(f"{config:<18} {batch:>5} {'ours-' + variant:<18} {mine['img_s']:>8.1f} {mine['data']:>8.0%} "
              f"{peak_mb:>8} {tflops:>8} {share:>6} {ratio:>8}", flush=True)
    if plain:
        tflops, share = mfu(flops, batch / plain["img_s"], peak)  # the same model and loss: the same FLOPs
        print(f"{config:<18} {batch:>5} {'plain':<18} {plain['img_s']:>8.1f} {plain['data']:>8.0%} {'-':>8} "
              f"{tflops:>8} {share:>6} {'1.00x':>8}   ({plain['setup']})", flush=True)


if __name__ == "__main__":
    main()
