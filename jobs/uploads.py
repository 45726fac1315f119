"""An upload written to the artifact store chunk by chunk: counted against the size limit and
hashed as it arrives, kept only when committed (an aborted upload leaves nothing behind)."""
from __future__ import annotations

import hashlib
import os

from jobs.storage import ArtifactStore


class UploadTooLarge(ValueError):
    pass


class UploadSink:
    def __init__(self, store: ArtifactStore, key: str, max_bytes: int):
        self.store, self.key, self.max_bytes = store, key, max_bytes
        self.final = store.staging_path(key)
        self.partial = self.final.with_name(f".{self.final.name}.part{os.getpid()}")
        self.file = open(self.partial, "wb")
        self.size = 0
        self.digest = hashlib.sha256()

    def write(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size > self.max_bytes:
            raise UploadTooLarge(f"upload is larger than the limit of {self.max_bytes} bytes")
        self.digest.update(chunk)
        self.file.write(chunk)

    @property
    def path(self):
        return self.partial

    def close(self) -> None:
        if not self.file.closed:
            self.file.close()

    def commit(self) -> str:
        """Move the finished file into place (and to the remote store); returns its sha256."""
        self.close()
        os.replace(self.partial, self.final)
        self.store.commit(self.key)
        return self.digest.hexdigest()

    def abort(self) -> None:
        self.close()
        self.partial.unlink(missing_ok=True)
        folder = self.final.parent
        try:
            folder.rmdir()  # the per-dataset folder, if nothing else is in it
        except OSError:
            pass
