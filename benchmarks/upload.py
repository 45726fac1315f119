"""Upload throughput: stream a zip archive through POST /v1/datasets to a real uvicorn server
process and print MB/s and the server's peak RSS (the upload must not be held in memory).

    python benchmarks/upload.py --size-mb 200
"""
from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent


def make_archive(path: Path, size_mb: int) -> int:
    """A stored (uncompressed) zip of 1 MiB random members: the bytes on the wire are the size."""
    rng = open("/dev/urandom", "rb")
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as archive:
        for i in range(size_mb):
            archive.writestr(f"blobs/{i:05d}.bin", rng.read(1 << 20))
    return path.stat().st_size


def rss_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size-mb", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        archive = Path(tmp) / "bench.zip"
        size = make_archive(archive, args.size_mb)
        port = free_port()
        env = {**os.environ, "DARKMATTER_HOME": str(Path(tmp) / "home"), "PYTHONPATH": str(ROOT),
               "DARKMATTER_MAX_UPLOAD_BYTES": str(size * 2), "DARKMATTER_MAX_BODY_BYTES": str(size * 2),
               "DARKMATTER_BROKER_URL": "memory://"}  # no worker here: the scan doorbell goes nowhere
        server = subprocess.Popen([sys.executable, "-m", "uvicorn", "--factory", "api.app:create_app", "--port",
                                   str(port), "--log-level", "warning"], env=env, cwd=ROOT)
        try:
            base = f"http://127.0.0.1:{port}"
            for _ in range(300):
                try:
                    if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.2)
            idle = rss_kib(server.pid, "VmRSS")
            started = time.perf_counter()
            with open(archive, "rb") as f:
                response = httpx.post(f"{base}/v1/datasets", files={"file": ("bench.zip", f, "application/zip")},
                                      timeout=600)
            elapsed = time.perf_counter() - started
            peak = rss_kib(server.pid, "VmHWM")
        finally:
            server.terminate()
            server.wait(30)
    if response.status_code != 201:
        raise SystemExit(f"upload failed: {response.status_code} {response.text[:500]}")
    print(f"uploaded {size / 1e6:.1f} MB in {elapsed:.2f} s: {size / 1e6 / elapsed:.1f} MB/s")
    print(f"API RSS: {idle / 1024:.0f} MiB idle, {peak / 1024:.0f} MiB peak "
          f"(+{(peak - idle) / 1024:.0f} MiB for a {size / 2**20:.0f} MiB upload)")


if __name__ == "__main__":
    main()
