"""`darkmatter up` as a user runs it: the URL is printed only once the API answers, console logs
are plain text when asked (JSON lines when not a terminal), and no Celery banner."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import httpx

from tests.conftest import ROOT
from tests.live.conftest import free_port


def test_up_prints_its_url_once_ready_with_readable_logs(tmp_path):
    port = free_port()
    env = {**os.environ, "DARKMATTER_HOME": str(tmp_path / "home"), "PYTHONPATH": str(ROOT), "CUDA_VISIBLE_DEVICES": "",
           "OMP_NUM_THREADS": "1"}
    env.pop("DARKMATTER_LOG_FORMAT", None)
    up = subprocess.Popen([sys.executable, "-m", "client.cli", "up", "--port", str(port), "--log-format", "text"],
                          env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          start_new_session=True)
    try:
        line = up.stdout.readline()  # blocks until `up` prints: it must be ready then
        assert line.startswith(f"darkmatter up: dashboard on http://127.0.0.1:{port}/"), line
        assert httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5).status_code == 200
        time.sleep(3)  # the worker's start-up lines
    finally:
        os.killpg(up.pid, signal.SIGTERM)
        _, logs = up.communicate(timeout=60)
    assert "-------------- celery@" not in logs and "[config]" not in logs  # no Celery banner
    lines = [line for line in logs.splitlines() if line.strip()]
    assert lines and not any(line.startswith("{") for line in lines), lines[:5]  # text, not JSON
    assert any(" api INFO " in line for line in lines) and any(" worker INFO " in line for line in lines)
