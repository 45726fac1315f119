"""The GPU checks of issue 22 in one run (about 10 minutes on an H100/H200): every image method's
compiled step (compile "whole", inductor) under torch.cuda.set_sync_debug_mode("error"), which
raises on any host sync inside it, then the throughput table with MFU against the strong baseline.

    .venv/bin/python -m benchmarks.gpu_check [--methods simclr,mae] [--skip-throughput]"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time

import torch

from core.methods import build, method_info, method_names
from core.train import TrainConfig, train


def sync_check(name: str, device: torch.device) -> str:
    """'ok', or the first host sync (or error) of `name`'s compiled step after two warm-up steps."""
    recipe = method_info(name).recipes["small"]
    vit = recipe.backbone.startswith("vit")
    torch.manual_seed(0)
    method = build(name, backbone="vit_tiny" if vit else "resnet18", in_channels=3, image_size=32,
                   backbone_options={"patch_size": 4} if vit else {})
    images = torch.randint(0, 256, (1024, 3, 32, 32), dtype=torch.uint8)
    config = TrainConfig(steps=4, batch_size=256, optimizer="sgd", lr=0.05, precision="bf16", compile="whole",
                         log_every=4)

    class Strict:  # sync debug on from the third step: the first two compile and may recompile
        def should_stop(self, step):
            torch.cuda.set_sync_debug_mode("error" if step == 2 else "default" if step == 3 else
                                           torch.cuda.get_sync_debug_mode())
            return None

        def on_log(self, step, logs): ...

        def on_checkpoint(self, step, state, final): ...

    try:
        train(method, images, config, device=device, callbacks=Strict())
        return "ok"
    except Exception as exc:
        return f"{type(exc).__name__}: {str(exc).splitlines()[0][:160]}"
    finally:
        torch.cuda.set_sync_debug_mode("default")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", default=None)
    parser.add_argument("--skip-throughput", action="store_true")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("gpu_check needs a CUDA device")
    device = torch.device("cuda")
    names = args.methods.split(",") if args.methods else [n for n in method_names()
                                                          if method_info(n).modality == "image"]
    print(f"host syncs inside the compiled step on {torch.cuda.get_device_name(device)}:", flush=True)
    for name in names:
        started = time.perf_counter()
        print(f"  {name:<16} {sync_check(name, device)}  ({time.perf_counter() - started:.0f} s)", flush=True)
    if not args.skip_throughput:
        subprocess.run([sys.executable, "-m", "benchmarks.train_throughput", "--configs",
                        "simclr-r18-512,mae-vits-224", "--variants", "eager,compile,whole,whole-graphs",
                        "--steps", "30"], check=False)


if __name__ == "__main__":
    main()
