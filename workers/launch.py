"""Starting a job's training child: one process, or an elastic torchrun launch of several.

A torchrun launch runs `workers.child` once per process (rank); torchrun's elastic agent
watches them and, with --max-restarts 0, tears the whole group down when any rank dies, so the
worker sees one failed child and gives the job back for a retry from its last checkpoint."""
from __future__ import annotations

import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """Ask Linux to SIGKILL this process when its parent dies (a killed worker or torchrun agent
    must not leave ranks training on a lease that has moved on). A no-op elsewhere."""
    if not sys.platform.startswith("linux"):
        return
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        return
    if os.getppid() == 1:  # the parent died before the request took effect
        os.kill(os.getpid(), signal.SIGKILL)


def free_port(host: str = "") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def command(job_id: str, lease_id: str, nodes: int = 1, devices: int = 1, rendezvous: str | None = None,
            node_rank: int = 0, attempt: int = 0, join_timeout: float = 600) -> list[str]:
    """The child's command line. lease_id is the worker id that holds the job's lease (node 0's
    worker for a multi-node job): rank 0 writes under it."""
    child = ["-m", "workers.child", job_id, lease_id]
    if nodes * devices == 1:
        return [sys.executable, *child]
    cmd = [sys.executable, "-m", "workers.torchrun", "--nnodes", str(nodes), "--nproc-per-node", str(devices),
           "--max-restarts", "0"]
    if nodes == 1:
        cmd += ["--standalone"]
    else:
        cmd += ["--rdzv-backend", "c10d", "--rdzv-endpoint", rendezvous, "--rdzv-id", f"{job_id}-{attempt}",
                "--rdzv-conf", f"is_host={int(node_rank == 0)},join_timeout={int(join_timeout)}"]
    return cmd + child


def start(cmd: list[str], env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(cmd, env=env)


class RunFiles:
    """Two local files between a worker and its child: `progress`, whose mtime the child renews
    while it makes progress (the watchdog reads it), and `result`, where a child that finished but
    could not record it leaves its final state for the worker to record."""

    def __init__(self, settings, job_id: str):
        folder = Path(settings.home) / "runs"
        folder.mkdir(parents=True, exist_ok=True)
        stem = f"{job_id}-{uuid.uuid4().hex[:8]}"
        self.progress, self.result = folder / f"{stem}.progress", folder / f"{stem}.result.json"
        self.progress.touch()
        os.utime(self.progress, (0, 0))  # the child's first beat arms the watchdog (start-up is not timed)

    def idle_seconds(self) -> float:
        """Seconds since the child's last beat; 0 before its first."""
        try:
            mtime = self.progress.stat().st_mtime
        except OSError:
            return 0.0
        return 0.0 if mtime == 0 else time.time() - mtime

    def recorded(self) -> dict | None:
        try:
            return json.loads(self.result.read_text())
        except (OSError, ValueError):
            return None

    def remove(self) -> None:
        for path in (self.progress, self.result):
            path.unlink(missing_ok=True)
