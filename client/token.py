"""The launch token of a server started without --auth on this machine (as notebook servers do):
DARKMATTER_TOKEN, else the file `api serve` wrote in DARKMATTER_HOME (`.darkmatter/launch-token`).
Only sent to a loopback URL: a token of this machine's server is no business of a remote one."""
from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlsplit

LOOPBACK = {"localhost", "127.0.0.1", "::1"}


def launch_token_file() -> Path:
    return Path(os.environ.get("DARKMATTER_HOME") or ".darkmatter").expanduser() / "launch-token"


def local_token(base_url: str) -> str | None:
    if os.environ.get("DARKMATTER_TOKEN"):
        return os.environ["DARKMATTER_TOKEN"]
    if (urlsplit(base_url).hostname or "") not in LOOPBACK:
        return None
    try:
        return launch_token_file().read_text().strip() or None
    except OSError:  # no server started here, or not ours to read
        return None
