"""Start the API and worker as child processes (the CLI never imports the server code)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time


def start_api(host: str, port: int, auth: bool = False, env: dict | None = None, log=None) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "api", "serve", "--host", host, "--port", str(port)] + (["--auth"] if auth else [])
    return subprocess.Popen(cmd, env=env or dict(os.environ), stdout=log, stderr=subprocess.STDOUT if log else None)


def start_worker(queues: list[str] | None = None, env: dict | None = None, log=None, quiet: bool = False
                 ) -> subprocess.Popen:
    cmd = ([sys.executable, "-m", "workers"] + [a for q in (queues or []) for a in ("--queue", q)]
           + (["--quiet"] if quiet else []))
    return subprocess.Popen(cmd, env=env or dict(os.environ), stdout=log, stderr=subprocess.STDOUT if log else None)


def stop(processes: list[subprocess.Popen], timeout: float = 30) -> None:
    """SIGTERM each, wait, then SIGKILL what is left."""
    for p in processes:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for p in processes:
        try:
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def wait_ready(url: str, processes: list[subprocess.Popen], timeout: float = 180) -> bool:
    """Until GET /readyz answers 200 (True), or a process exits or `timeout` passes (False)."""
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and all(p.poll() is None for p in processes):
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    return False


def wait_any(processes: list[subprocess.Popen]) -> None:
    while all(p.poll() is None for p in processes):
        time.sleep(0.5)
