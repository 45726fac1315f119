"""`python -m workers.torchrun ARGS`: torchrun (torch.distributed.run) that dies with its worker."""
from __future__ import annotations

from torch.distributed.run import main as torchrun

from workers.launch import die_with_parent

if __name__ == "__main__":
    die_with_parent()
    torchrun()
