"""Embedding serving without HTTP: the endpoint's forward pass (api.batching.encoder_forward) and
its batcher, called from concurrent threads in one process, with batching on and off. It shows
what batching gains on the model itself, on any device (a GPU too, where the HTTP benchmark,
benchmarks/embed_serving.py, cannot run because the service is not installed there).

    .venv/bin/python -m benchmarks.embed_engine [--seconds 5] [--clients 1,8,64] [--device cuda]

Target: batching >= 3x req/s at 64 clients on ResNet-18 on CPU, >= 5x on a GPU."""
from __future__ import annotations

import argparse
import threading
import time

import torch

from api.batching import Batcher, encoder_forward
from core.backbones import build_backbone

CHECKPOINTS = {"small_cnn": {"width": 32}, "resnet18": {}}


def load(batcher: Batcher, forward, clients: int, seconds: float) -> tuple[float, float, float]:
    """`clients` threads each embedding one 32 px image at a time: (req/s, p50 ms, p99 ms)."""
    latencies: list[float] = []
    stop = time.monotonic() + seconds

    def client(k: int) -> None:
        x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(k))
        while time.monotonic() < stop:
            started = time.perf_counter()
            batcher.run("model", forward, x)
            latencies.append(time.perf_counter() - started)

    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ordered = sorted(latencies)
    return (len(ordered) / (time.monotonic() - started), ordered[len(ordered) // 2] * 1e3,
            ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))] * 1e3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--clients", default="1,8,64")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    parser.add_argument("--max-batch", type=int, default=256)
    args = parser.parse_args()
    clients = [int(c) for c in args.clients.split(",")]
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    print(f"embedding engine (in-process, no HTTP) on {name}, precision {args.precision}, {args.seconds:.0f}s a cell")
    print(f"{'checkpoint':<10} {'clients':>7} {'batching':>8} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'on/off':>7}")
    rows = {}
    for checkpoint, options in CHECKPOINTS.items():
        torch.manual_seed(0)
        encoder = build_backbone(checkpoint, in_channels=3, image_size=32, **options).to(device).eval()
        forward = encoder_forward(encoder, args.precision)
        for n in clients:
            for batching, max_batch in (("off", 1), ("on", args.max_batch)):
                batcher = Batcher(max_batch=max_batch)
                load(batcher, forward, n, min(1.0, args.seconds))  # warm-up
                rows[(checkpoint, n, batching)] = rate, p50, p99 = load(batcher, forward, n, args.seconds)
                ratio = rate / rows[(checkpoint, n, "off")][0]
                print(f"{checkpoint:<10} {n:>7} {batching:>8} {rate:>8.1f} {p50:>8.1f} {p99:>8.1f} {ratio:>6.2f}x",
                      flush=True)
    top = max(clients)
    ratio = rows[("resnet18", top, "on")][0] / rows[("resnet18", top, "off")][0]
    target = 5.0 if device.type == "cuda" else 3.0
    print(f"ResNet-18 at {top} clients: batching {ratio:.2f}x (target >= {target:.0f}x on {device.type})")


if __name__ == "__main__":
    main()
