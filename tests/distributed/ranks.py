"""Run a function in N real processes joined by torch.distributed (gloo over loopback)."""
from __future__ import annotations

import logging
import os
import socket
import sys
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from safetensors.torch import load_file, save_file


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _entry(rank: int, world: int, port: int, fn, args: tuple, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        result = fn(*args)
        tmp = f"{out}/.{rank}.safetensors.part"
        save_file({k: v.detach().contiguous().clone() for k, v in result.items()}, tmp)
        os.replace(tmp, f"{out}/{rank}.safetensors")  # whole or absent
    finally:
        dist.destroy_process_group()
    # A rank that finished leaves without the interpreter's finalisation: there, on this project's CI
    # machine, a gloo thread still holding tensors sometimes aborted the process (SIGABRT, "terminate
    # called without an active exception"; pytorch PR #179291 describes a teardown race of this kind).
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def run_ranks(fn, world: int, out_dir: Path, *args) -> list[dict[str, torch.Tensor]]:
    """fn(*args) -> dict of tensors, on every rank of a `world`-process gloo group; returns each
    rank's dict. fn must be importable (a module-level function)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        mp.start_processes(_entry, args=(world, free_port(), fn, args, str(out_dir)), nprocs=world,
                           start_method="spawn")
    except mp.ProcessExitedException as exc:
        # On this project's CI machine a rank sometimes aborts (SIGABRT, "terminate called without an
        # active exception") after its work, as gloo's threads are torn down at exit. Results written
        # whole by every rank are the run's; a rank that died before writing its own still fails.
        if exc.signal_name is None or not all((out_dir / f"{r}.safetensors").exists() for r in range(world)):
            raise
        logging.getLogger(__name__).warning("a rank ended with %s after every rank wrote its result", exc)
    return [load_file(out_dir / f"{r}.safetensors") for r in range(world)]
