"""What the sync and async clients share beyond requests: resumable downloads checked by
sha256, and embeddings decoded to numpy."""
from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

from client.errors import ChecksumMismatch


class Download:
    """A download into `<dest>.part` (its ETag kept in `<dest>.part.json`) that a later run
    resumes with `Range` + `If-Range`; on success the file is checked and renamed to `dest`."""

    def __init__(self, dest: Path):
        self.dest = dest
        self.partial = dest.with_name(dest.name + ".part")
        self.sidecar = dest.with_name(dest.name + ".part.json")
        self.digest = hashlib.sha256()
        self.done = self.total = 0
        self.resumed_from = 0
        self.etag = ""
        self.file = None

    def known_etag(self) -> str:
        try:
            return json.loads(self.sidecar.read_text())["etag"]
        except (OSError, ValueError, KeyError):
            return ""

    def request_headers(self) -> dict:
        etag = self.known_etag()
        if etag and self.partial.exists() and self.partial.stat().st_size > 0:
            return {"Range": f"bytes={self.partial.stat().st_size}-", "If-Range": f'"{etag}"'}
        return {}

    def restart(self) -> None:
        self.partial.unlink(missing_ok=True)
        self.sidecar.unlink(missing_ok=True)

    def begin(self, status: int, headers) -> None:
        """Open the partial file: append after a 206, start over after a 200."""
        self.dest.parent.mkdir(parents=True, exist_ok=True)
        self.etag = headers.get("etag", "").strip('"')
        length = int(headers.get("content-length") or 0)
        self.digest = hashlib.sha256()
        if status == 206 and self.partial.exists():
            self.resumed_from = self.partial.stat().st_size
            with open(self.partial, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    self.digest.update(block)
            self.file = open(self.partial, "ab")
        else:
            self.resumed_from = 0
            self.file = open(self.partial, "wb")
            self.sidecar.write_text(json.dumps({"etag": self.etag}))
        self.done, self.total = self.resumed_from, self.resumed_from + length

    def write(self, chunk: bytes) -> None:
        self.digest.update(chunk)
        self.file.write(chunk)
        self.done += len(chunk)

    def finish(self) -> tuple[Path, str]:
        self.file.close()
        actual = self.digest.hexdigest()
        if self.etag and actual != self.etag:
            self.restart()
            raise ChecksumMismatch(self.dest, self.etag, actual)
        self.partial.replace(self.dest)
        self.sidecar.unlink(missing_ok=True)
        return self.dest, actual

    def close(self) -> None:
        """Keep what was written (for a later resume) when the transfer is interrupted."""
        if self.file is not None and not self.file.closed:
            self.file.close()


def to_array(response: dict):
    """The (N, D) float32 array of a /v1/embeddings answer (base64 or float encoded)."""
    import numpy as np

    rows = sorted(response["data"], key=lambda d: d["index"])
    if rows and isinstance(rows[0]["embedding"], str):
        return np.stack([np.frombuffer(base64.b64decode(r["embedding"]), dtype="<f4") for r in rows])
    return np.asarray([r["embedding"] for r in rows], dtype=np.float32).reshape(len(rows), -1)
