"""One copy of a job's in-memory training images per machine, however many ranks run there."""
from __future__ import annotations

import os
import uuid
import warnings
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor


def local_world() -> tuple[int, int]:
    """(this process's rank on its machine, processes on its machine), as torchrun and Ray set them."""
    return int(os.environ.get("LOCAL_RANK", "0")), int(os.environ.get("LOCAL_WORLD_SIZE", "1"))


def shared_images(load: Callable[[], Tensor], key: str, folder: str | Path) -> Tensor:
    """The training images, loaded by the machine's first rank only and mapped by every rank of
    the machine from one file (copy-on-write), so the page cache holds one copy rather than one a
    rank. Outside a process group of several ranks on the machine it is just load(). Every rank
    of the group must call it (it meets the others at two barriers). The file is unlinked once all
    have mapped it: nothing stays behind, even if the job is killed later."""
    local_rank, local_size = local_world()
    if local_size <= 1 or not (dist.is_available() and dist.is_initialized()):
        return load()
    path = Path(folder) / f"darkmatter-{key}.npy"
    if local_rank == 0:
        images = load().contiguous()
        partial = path.with_name(f"{path.name}.{uuid.uuid4().hex[:6]}.tmp")
        with open(partial, "wb") as f:  # a file object: np.save would append ".npy" to a name
            np.save(f, images.numpy())
        os.replace(partial, path)
    dist.barrier()  # written
    mapped = np.load(path, mmap_mode="c")
    with warnings.catch_warnings():  # copy-on-write: a write would stay private to the rank
        warnings.simplefilter("ignore", UserWarning)
        shared = torch.from_numpy(mapped)
    dist.barrier()  # mapped everywhere
    if local_rank == 0:
        path.unlink(missing_ok=True)
    return shared


def shared_folder(home: str | Path) -> Path:
    """Shared memory where the machine has it, else the worker's home."""
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK):
        return shm
    folder = Path(home) / "runs"
    folder.mkdir(parents=True, exist_ok=True)
    return folder
