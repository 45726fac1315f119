"""Embedding serving: req/s and p50/p99 latency at 1, 8 and 64 concurrent clients, with dynamic
batching on and off, for a small_cnn and a ResNet-18 checkpoint (one 32 px image per request).

    .venv/bin/python -m benchmarks.embed_serving [--seconds 10] [--clients 1,8,64]

Each configuration runs against a real API process (uvicorn) on loopback, loaded by asyncio clients
(benchmarks/loadgen.py) that cost the server little CPU. Target (CPU): batching
gives >= 3x the req/s at 64 clients on the ResNet-18 checkpoint."""
from __future__ import annotations

import argparse
import base64
import io
import numpy as np
from PIL import Image

from benchmarks import loadgen
from benchmarks.service import embedded_settings, register_checkpoint, start_api

TARGET = 3.0


def png(seed: int) -> str:
    pixels = np.random.default_rng(seed).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def load(url: str, model: str, clients: int, seconds: float) -> tuple[float, float, float]:
    images = [png(i) for i in range(16)]
    return loadgen.run(url, clients, seconds, lambda k, i: (
        "POST", "/v1/embeddings", {"model": model, "input": [images[(k + i) % 16]]}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--clients", default="1,8,64")
    args = parser.parse_args()
    clients = [int(c) for c in args.clients.split(",")]
    settings = embedded_settings()
    models = {"small_cnn": register_checkpoint(settings, "small_cnn", {"width": 32}),
              "resnet18": register_checkpoint(settings, "resnet18", {})}
    rows = {}
    for batching, env in (("off", {"DARKMATTER_EMBEDDING_MAX_BATCH": "1"}), ("on", {})):
        proc, url = start_api(settings, env)
        try:
            for name, model in models.items():
                load(url, model, 1, 1.0)  # warm the model cache
                for n in clients:
                    rows[(name, n, batching)] = load(url, model, n, args.seconds)
        finally:
            proc.terminate()
            proc.wait()
    print(f"embedding serving, {args.seconds:.0f}s per cell, one 32 px PNG per request (API on loopback)")
    print(f"{'checkpoint':<10} {'clients':>7} {'batching':>8} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'on/off':>7}")
    for (name, n, batching), (rate, p50, p99) in rows.items():
        ratio = rate / rows[(name, n, "off")][0]
        print(f"{name:<10} {n:>7} {batching:>8} {rate:>8.1f} {p50:>8.1f} {p99:>8.1f} {ratio:>6.2f}x")
    ratio = rows[("resnet18", max(clients), "on")][0] / rows[("resnet18", max(clients), "off")][0]
    print(f"ResNet-18 at {max(clients)} clients: batching {ratio:.2f}x (target >= {TARGET:.0f}x on CPU)")


if __name__ == "__main__":
    main()
