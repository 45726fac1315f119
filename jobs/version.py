"""The code version recorded in every checkpoint manifest."""
from __future__ import annotations

import subprocess
from functools import lru_cache
from pathlib import Path


@lru_cache
def code_version() -> str:
    root = Path(__file__).resolve().parent.parent
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "--short=12", "HEAD"], capture_output=True,
                             text=True, timeout=5)
        if out.returncode == 0:
            return f"darkmatter 0.1.0+g{out.stdout.strip()}"
    except (OSError, subprocess.SubprocessError):
        pass
    return "darkmatter 0.1.0"
