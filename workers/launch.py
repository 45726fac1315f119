"""Starting a job's training child: one process, a standalone torchrun launch of several on this
machine, or the driver of a Ray Train run for a job of several machines (workers/ray_run.py).

A torchrun launch runs `workers.child` once per process (rank); torchrun's elastic agent
watches them and, with --max-restarts 0, tears the whole group down when any rank dies. The
agent reports any failure as exit code 1, so each rank leaves its own code in the run's outcome
folder and the worker reads those (RunFiles.outcome)."""
from __future__ import annotations

import ctypes
import json
import os
import shutil
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


def command(job_id: str, lease_id: str, nodes: int = 1, devices: int = 1) -> list[str]:
    """The child's command line; lease_id is the worker id that holds the job's lease."""
    child = ["-m", "workers.child", job_id, lease_id]
    if nodes > 1:
        return [sys.executable, "-m", "workers.ray_run", job_id, lease_id]
    if devices == 1:
        return [sys.executable, *child]
    return [sys.executable, "-m", "workers.torchrun", "--standalone", "--nnodes", "1", "--nproc-per-node", str(devices),
            "--max-restarts", "0", *child]


def start(cmd: list[str], env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(cmd, env=env)


# exit codes of workers.child, the most telling first: a rank's transient error breaks the
# others' group, so the transient code says more about the run than the lost group
UNRECORDED, TRANSIENT, LOST_GROUP = 6, 5, 4


class RunFiles:
    """Local files between a worker and its child: `progress`, whose mtime the child renews while
    it makes progress (the watchdog reads it), and the `outcomes` folder, where each rank leaves
    its exit code and, when it finished but could not record it, the final state for the worker
    to record."""

    def __init__(self, settings, job_id: str):
        folder = Path(settings.home) / "runs"
        folder.mkdir(parents=True, exist_ok=True)
        stem = f"{job_id}-{uuid.uuid4().hex[:8]}"
        self.progress, self.outcomes = folder / f"{stem}.progress", folder / f"{stem}.outcomes"
        self.outcomes.mkdir()
        self.progress.touch()
        os.utime(self.progress, (0, 0))  # the child's first beat arms the watchdog (start-up is not timed)

    def idle_seconds(self) -> float:
        """Seconds since the child's last beat; 0 before its first."""
        try:
            mtime = self.progress.stat().st_mtime
        except OSError:
            return 0.0
        return 0.0 if mtime == 0 else time.time() - mtime

    def ranks(self) -> list[dict]:
        found = []
        for path in sorted(self.outcomes.glob("rank-*.json")):
            try:
                found.append(json.loads(path.read_text()))
            except (OSError, ValueError):
                continue
        return found

    def outcome(self, code: int) -> tuple[int, dict | None]:
        """(the run's exit code, a final state to record) from the child's exit code and the
        ranks' own codes."""
        ranks = self.ranks()
        for rank in ranks:
            if rank.get("recorded"):
                return UNRECORDED, rank["recorded"]
        if code != 0:
            codes = {rank.get("code") for rank in ranks}
            for telling in (TRANSIENT, LOST_GROUP):
                if telling in codes:
                    return telling, None
        return code, None

    def remove(self) -> None:
        self.progress.unlink(missing_ok=True)
        shutil.rmtree(self.outcomes, ignore_errors=True)
