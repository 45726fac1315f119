"""Seeds derived from (seed, step): every step's randomness is a pure function of both."""
from __future__ import annotations

import hashlib


def step_seed(seed: int, step: int, stream: int = 0) -> int:
    """A 63-bit seed for (seed, step, stream), from a hash, so that no two (seed, step) pairs
    share a seed (a linear mix like seed * K + step collides once step reaches K)."""
    digest = hashlib.blake2b(f"{seed}:{step}:{stream}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & (2**63 - 1)
