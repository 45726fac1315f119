"""A real API server process (uvicorn) under hostile and slow clients: every abuse is refused
quickly with the process's peak memory bounded, and /healthz and a database-backed read stay
fast while 50 SSE streams and 5 slow downloads are open (the figures are printed)."""
from __future__ import annotations

import json
import socket
import statistics
import subprocess
import sys
import threading
import time

import httpx
import pytest
import torch

from jobs import checkpoints
from jobs.db import session_scope
from jobs.ids import new_id
from jobs.storage import ArtifactStore
from jobs.tables import DEFAULT_PROJECT, Job
from tests.conftest import ROOT, make_settings, settings_env

TOKEN = "load-test-launch-token"  # the server runs without --auth: /v1 needs its launch token
AUTH = {"Authorization": f"Bearer {TOKEN}"}
CHECKPOINT_FLOATS = 8 << 20  # a 32 MiB backbone part: a slow reader holds its download open for minutes


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def memory_kib(pid: int) -> dict[str, int]:
    fields = {}
    for line in open(f"/proc/{pid}/status"):
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(value.split()[0])
    return fields


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """`python -m api serve` on a free port (SQLite, auth off) with a queued job whose event stream
    never ends (no worker) and a checkpoint to download."""
    home = tmp_path_factory.mktemp("load") / "home"
    settings, _ = make_settings("sqlite", home)
    from jobs.migrate import upgrade

    upgrade(settings.database_url)
    with session_scope(settings.database_url) as session:
        job = Job(id=new_id("job"), project_id=DEFAULT_PROJECT, kind="pretrain", state="queued", spec={},
                  queue="default", result={})
        session.add(job)
        session.flush()
        row = checkpoints.register(session, ArtifactStore(settings.storage_url), project_id=DEFAULT_PROJECT,
                                   job_id=job.id, step=1, final=True, method="simclr", backbone="small_cnn",
                                   dataset_id=None, trees={"backbone": {"w": torch.zeros(CHECKPOINT_FLOATS)}},
                                   manifest={})
        ids = {"job": job.id, "checkpoint": row.id}
    port = free_port()
    env = settings_env(settings)
    env.update(DARKMATTER_RATE_LIMIT_PER_SECOND="1000", DARKMATTER_RATE_LIMIT_BURST="1000",
               DARKMATTER_LAUNCH_TOKEN=TOKEN)
    log = open(home / "api.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "api", "serve", "--host", "127.0.0.1", "--port", str(port)],
                            env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.3)
    else:
        proc.kill()
        pytest.fail("the API server did not start: " + (home / "api.log").read_text()[-2000:])
    yield {"url": url, "port": port, "pid": proc.pid, **ids}
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()


def nested(depth: int) -> bytes:
    return b'{"method": "simclr", "dataset": "digits", "backbone_options": {"a": ' + b"[" * depth + b"]" * depth + b"}}"


def pixels(values: int) -> bytes:
    """An embeddings request of one pixel array of `values` zeros: 2 bytes of JSON per number."""
    return b'{"model": "ckpt_x", "input": [[[' + b"0," * (values - 1) + b'0]]]}'


def declared_only(port: int, path: str, length: int) -> int:
    """Send only the headers of a body of `length` bytes; the answer's status (no body is sent)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TOKEN}\r\n"
                     f"Content-Type: application/json\r\n"
                     f"Content-Length: {length}\r\n\r\n".encode())
        return int(sock.recv(4096).split(b" ", 2)[1])


def test_abuse_is_refused_quickly_with_memory_bounded(server):
    url, pid, port = server["url"], server["pid"], server["port"]
    huge = b'{"uri": "' + b"a" * (200 << 20) + b'", "format": "zip"}'

    def chunked():
        for start in range(0, len(huge), 1 << 20):
            yield huge[start:start + (1 << 20)]

    json_headers = {"content-type": "application/json"}
    abuses = {
        "nested JSON (400k levels, /v1/jobs)": lambda c: c.post("/v1/jobs", content=nested(400_000),
                                                                headers=json_headers).status_code,
        "nested JSON (400k levels, /v1/datasets)": lambda c: c.post("/v1/datasets", content=nested(400_000),
                                                                    headers=json_headers).status_code,
        "huge JSON dataset body (200 MiB, declared)": lambda c: declared_only(port, "/v1/datasets", len(huge)),
        "huge JSON dataset body (200 MiB, chunked)": lambda c: c.post("/v1/datasets", content=chunked(),
                                                                      headers=json_headers).status_code,
        "brace bomb {0..99999}{0..99999}": lambda c: c.post("/v1/datasets", json={
            "uri": "s3://data/{0..99999}{0..99999}.tar", "format": "webdataset"}).status_code,
        "backbone_options depth 1e8": lambda c: c.post("/v1/jobs", json={
            "method": "simclr", "dataset": "digits", "backbone": "vit_tiny",
            "backbone_options": {"depth": 10**8}}).status_code,
        "backbone_options dim 4096 x depth 64": lambda c: c.post("/v1/jobs", json={
            "method": "simclr", "dataset": "digits", "backbone": "vit_small",
            "backbone_options": {"dim": 4096, "depth": 64, "heads": 64}, "steps": 1}).status_code,
        "method_options proj_hidden_dim 1e8": lambda c: c.post("/v1/jobs", json={
            "method": "simclr", "dataset": "digits", "backbone": "small_cnn", "steps": 1,
            "method_options": {"proj_hidden_dim": 10**8}}).status_code,
        "embedding pixel arrays (60 MiB of JSON numbers)": lambda c: c.post("/v1/embeddings", content=pixels(30 << 20),
                                                                            headers=json_headers).status_code,
        "embedding pixel arrays (15 MiB, under the cap)": lambda c: c.post("/v1/embeddings", content=pixels(15 << 19),
                                                                           headers=json_headers).status_code,
    }
    expected = {"nested": 422, "huge": 413, "brace": 422, "_options": 422, "60 MiB": 413, "15 MiB": 404}
    results = {}
    with httpx.Client(base_url=url, timeout=60, headers=AUTH) as api:
        warm = api.post("/v1/jobs", json={"method": "simclr", "dataset": "digits", "backbone": "small_cnn",
                                          "steps": 1, "batch_size": 16})  # built-in registered, code paths loaded
        assert warm.status_code == 201, warm.text
        for name, call in abuses.items():
            before = memory_kib(pid)["VmHWM"]
            started = time.monotonic()
            status = call(api)
            results[name] = {"status": status, "seconds": round(time.monotonic() - started, 3),
                             "peak_growth_mib": round((memory_kib(pid)["VmHWM"] - before) / 1024, 1)}
    print("\nabuse refusals:", json.dumps(results), f"\nAPI peak memory after them: {memory_kib(pid)['VmHWM'] / 1024:.0f} MiB")
    for name, result in results.items():
        assert result["status"] == next(code for word, code in expected.items() if word in name), (name, result)
        if "under the cap" in name:  # a valid body as large as allowed: parsed (~10x its size), then 404
            assert result["seconds"] < 5.0 and result["peak_growth_mib"] < 200, (name, result)
        else:
            assert result["seconds"] < 2.0 and result["peak_growth_mib"] < 32, (name, result)


class SlowDownload(threading.Thread):
    """Reads a download 16 KiB every 0.2 s (80 KiB/s): the response stays open for minutes."""

    def __init__(self, port: int, path: str):
        super().__init__(daemon=True)
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
        self.sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TOKEN}\r\n\r\n".encode())
        self.head, self.received, self.stop = b"", 0, threading.Event()

    def run(self) -> None:
        while not self.stop.wait(0.2):
            try:
                chunk = self.sock.recv(16384)
            except OSError:
                return
            if not chunk:
                return
            if not self.head:
                self.head = chunk[:200]
            self.received += len(chunk)


def open_event_stream(port: int, job_id: str) -> tuple[socket.socket, bytes]:
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.sendall(f"GET /v1/jobs/{job_id}/events?stream=true HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                 f"Authorization: Bearer {TOKEN}\r\n\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(4096)
    return sock, head


def latencies(client: httpx.Client, path: str, n: int) -> list[float]:
    out = []
    for _ in range(n):
        started = time.monotonic()
        assert client.get(path).status_code == 200
        out.append(time.monotonic() - started)
        time.sleep(0.01)
    return out


def p(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


def test_api_stays_responsive_with_50_event_streams_and_5_slow_downloads(server):
    port, pid = server["port"], server["pid"]
    streams = [open_event_stream(port, server["job"]) for _ in range(50)]
    downloads = [SlowDownload(port, f"/v1/checkpoints/{server['checkpoint']}/download") for _ in range(5)]
    for d in downloads:
        d.start()
    try:
        assert all(head.startswith(b"HTTP/1.1 200") for _, head in streams), streams[0][1]
        time.sleep(2)  # every stream polling, every download past its first buffers
        with httpx.Client(base_url=server["url"], timeout=30, headers=AUTH) as api:
            health = latencies(api, "/healthz", 300)
            job_reads = latencies(api, f"/v1/jobs/{server['job']}", 100)
            other_stream = api.get(f"/v1/jobs/{server['job']}/events")  # not streamed: answers at once
        assert other_stream.status_code == 200
        assert all(d.head.startswith(b"HTTP/1.1 200") for d in downloads)
        assert all(0 < d.received < CHECKPOINT_FLOATS * 4 for d in downloads)  # still open: slow, not done
        memory = memory_kib(pid)
    finally:
        for d in downloads:
            d.stop.set()
            d.sock.close()
        for sock, _ in streams:
            sock.close()
    figures = {"healthz_p50_ms": p(health, 50) * 1000, "healthz_p99_ms": p(health, 99) * 1000,
               "healthz_max_ms": max(health) * 1000, "job_read_p50_ms": p(job_reads, 50) * 1000,
               "job_read_p99_ms": p(job_reads, 99) * 1000, "api_rss_mib": memory["VmRSS"] / 1024}
    print("\nunder 50 SSE streams + 5 slow downloads:", json.dumps({k: round(v, 1) for k, v in figures.items()}))
    assert figures["healthz_p99_ms"] < 500, figures
    assert figures["job_read_p99_ms"] < 2000, figures  # no pooled connection is held by a stream or download
