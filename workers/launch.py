"""Starting a job's training child: one process, or an elastic torchrun launch of several.

A torchrun launch runs `workers.child` once per process (rank); torchrun's elastic agent
watches them and, with --max-restarts 0, tears the whole group down when any rank dies, so the
worker sees one failed child and gives the job back for a retry from its last checkpoint."""
from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import sys

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
