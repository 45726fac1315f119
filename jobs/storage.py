"""The artifact store: files addressed by keys the service builds from opaque ids.

Local directory by default; any fsspec URL (s3://bucket/prefix) when configured."""
from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path

from jobs.cache import touch

_KEY = re.compile(r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$")


def check_key(key: str) -> str:
    if not _KEY.match(key) or ".." in key.split("/"):
        raise ValueError(f"invalid artifact key {key!r}")
    return key


class ArtifactStore:
    def __init__(self, url: str, cache_dir: str | Path | None = None, storage_options: dict | None = None):
        self.url = url.rstrip("/")
        self.storage_options = storage_options or {}  # e.g. the S3 endpoint of a MinIO
        self.remote = "://" in url and not url.startswith("file://")
        self.root = Path(url.removeprefix("file://")) if not self.remote else None
        self.cache = Path(cache_dir or tempfile.gettempdir()) / "darkmatter-cache"

    def _fs(self):
        import fsspec

        return fsspec.url_to_fs(self.url, **self.storage_options)[0]

    def local_path(self, key: str) -> Path:
        """A local file holding the artifact (downloaded to a cache for remote stores). Each
        download writes a file of its own and renames it into place whole, so concurrent first
        reads never see a partial file."""
        check_key(key)
        if self.root is not None:
            return self.root / key
        target = self.cache / key
        if target.exists():
            touch(target)  # recently used: the cache trim keeps it
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
        os.close(fd)
        try:
            self._fs().get(f"{self.url}/{key}", tmp)
            os.replace(tmp, target)
        finally:
            Path(tmp).unlink(missing_ok=True)
        return target

    def cached_path(self, key: str) -> Path | None:
        """The local file of an artifact when there is one now (local store, or a cached copy)."""
        check_key(key)
        path = (self.root / key) if self.root is not None else (self.cache / key)
        if path.exists():
            if self.root is None:
                touch(path)
            return path
        return None

    def evict(self, key: str) -> None:
        """Forget a remote artifact's cached copy (e.g. one that failed its checksum): the next
        read fetches it again. Nothing happens for a local store."""
        check_key(key)
        if self.root is None:
            (self.cache / key).unlink(missing_ok=True)

    def open_remote(self, key: str):
        """A seekable binary file object reading the artifact straight from the remote store."""
        check_key(key)
        return self._fs().open(f"{self.url}/{key}", "rb", block_size=1 << 20)

    def size(self, key: str) -> int | None:
        """The artifact's size in bytes; None when it is not there."""
        check_key(key)
        if self.root is not None:
            path = self.root / key
            return path.stat().st_size if path.is_file() else None
        try:
            return int(self._fs().info(f"{self.url}/{key}")["size"])
        except FileNotFoundError:
            return None

    def staging_path(self, key: str) -> Path:
        """Where to write a new artifact before `commit` (the final place for a local store)."""
        check_key(key)
        path = (self.root / key) if self.root is not None else (self.cache / key)
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def commit(self, key: str) -> None:
        if self.remote:
            self._fs().put(str(self.cache / key), f"{self.url}/{key}")

    def exists(self, key: str) -> bool:
        check_key(key)
        return (self.root / key).exists() if self.root is not None else self._fs().exists(f"{self.url}/{key}")

    def list_dir(self, prefix: str) -> list[tuple[str, float]]:
        """(name, newest modification time) of each entry directly under `prefix`."""
        check_key(prefix)
        if self.root is not None:
            base = self.root / prefix
            if not base.is_dir():
                return []
            return [(entry.name, _newest_mtime(entry)) for entry in base.iterdir()]
        fs = self._fs()
        if not fs.exists(f"{self.url}/{prefix}"):
            return []
        out = []
        for entry in fs.ls(f"{self.url}/{prefix}", detail=True):
            name = entry["name"].rstrip("/").rsplit("/", 1)[-1]
            files = fs.find(entry["name"], detail=True).values() if entry.get("type") == "directory" else [entry]
            out.append((name, max((_mtime(f) for f in files), default=0.0)))
        return out

    def delete(self, key: str) -> None:
        check_key(key)
        if self.root is not None:
            path = self.root / key
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
        else:
            try:
                self._fs().rm(f"{self.url}/{key}", recursive=True)
            except FileNotFoundError:  # gone already: deleting is idempotent, as for a local store
                pass
            cached = self.cache / key  # this process's copy would otherwise outlive the artifact
            if cached.is_dir():
                shutil.rmtree(cached, ignore_errors=True)
            else:
                cached.unlink(missing_ok=True)


def _newest_mtime(path: Path) -> float:
    if path.is_dir():
        return max((p.stat().st_mtime for p in path.rglob("*")), default=path.stat().st_mtime)
    return path.stat().st_mtime


def _mtime(info: dict) -> float:
    """Modification time from an fsspec info dict (local: mtime; s3: LastModified)."""
    value = info.get("mtime") or info.get("LastModified") or info.get("last_modified") or info.get("created") or 0
    return value.timestamp() if hasattr(value, "timestamp") else float(value)


def store_for(settings) -> ArtifactStore:
    """The service's artifact store, from settings (storage URL, cache folder, S3 endpoint)."""
    return ArtifactStore(settings.storage_url, cache_dir=settings.home / "cache", storage_options=settings.storage_options)
