"""A light HTTP/1.1 load generator (asyncio, keep-alive, one connection per client), so that on a
small machine the clients cost far less CPU than the server they measure (a thread per httpx
client costs about as much as the request it times)."""
from __future__ import annotations

import asyncio
import json
import os
import time
from urllib.parse import urlsplit


def request_bytes(host: str, method: str, path: str, body: dict | None = None) -> bytes:
    payload = json.dumps(body).encode() if body is not None else b""
    head = f"{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: keep-alive\r\n"
    if os.environ.get("DARKMATTER_TOKEN"):  # the launch token of a server started without --auth
        head += f"Authorization: Bearer {os.environ['DARKMATTER_TOKEN']}\r\n"
    if body is not None:
        head += f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n"
    return head.encode() + b"\r\n" + payload


async def _exchange(reader, writer, data: bytes) -> tuple[int, bytes]:
    writer.write(data)
    await writer.drain()
    status = int((await reader.readline()).split()[1])
    length = 0
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    return status, await reader.readexactly(length)


async def _run(url: str, clients: int, seconds: float, request, on_answer) -> list[float]:
    parts = urlsplit(url)
    latencies: list[float] = []
    stop = time.monotonic() + seconds

    async def client(k: int) -> None:
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
        i = 0
        try:
            while time.monotonic() < stop:
                method, path, body = request(k, i)
                data = request_bytes(parts.netloc, method, path, body)
                started = time.perf_counter()
                status, answer = await _exchange(reader, writer, data)
                if status >= 300:
                    raise RuntimeError(f"{method} {path}: {status} {answer[:300]!r}")
                latencies.append(time.perf_counter() - started)
                if on_answer is not None:
                    on_answer(answer)
                i += 1
        finally:
            writer.close()

    await asyncio.gather(*(client(k) for k in range(clients)))
    return latencies


def run(url: str, clients: int, seconds: float, request, on_answer=None) -> tuple[float, float, float]:
    """`clients` concurrent connections sending request(client, i) -> (method, path, json body or
    None) for `seconds`: (req/s, p50 ms, p99 ms). A response of 300 or more raises; on_answer(body)
    sees each other one."""
    started = time.monotonic()
    latencies = sorted(asyncio.run(_run(url, clients, seconds, request, on_answer)))
    elapsed = time.monotonic() - started
    pick = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1e3  # noqa: E731
    return len(latencies) / elapsed, pick(0.5), pick(0.99)
