"""Opaque resource ids: a kind prefix and random hex (never derived from user input)."""
from __future__ import annotations

import secrets


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(8)}"
