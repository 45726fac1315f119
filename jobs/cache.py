"""The local cache of remote artifacts and datasets (`home`/cache): trimmed to a size, least
recently used first. A file used within `min_age` seconds (a download being served, a model
being loaded, a checkpoint waiting for its upload) is never removed; the store touches a cached
file each time it hands it out."""
from __future__ import annotations

import logging
import os
import time
from pathlib import Path

log = logging.getLogger(__name__)


def trim(cache_dir: Path, max_bytes: int, min_age: float, now: float | None = None) -> list[Path]:
    """Delete the least recently used files until the cache holds at most `max_bytes`; returns
    the deleted paths. Leftover partial downloads older than `min_age` always go."""
    now = time.time() if now is None else now
    if not cache_dir.is_dir():
        return []
    files = []
    for path in cache_dir.rglob("*"):
        try:
            if path.is_symlink() or not path.is_file():
                continue
            stat = path.stat()
        except OSError:  # removed while we looked
            continue
        files.append((max(stat.st_mtime, stat.st_atime), stat.st_size, path))
    total = sum(size for _, size, _ in files)
    deleted = []
    for used, size, path in sorted(files, key=lambda f: f[0]):
        partial = ".part" in path.name
        if now - used < min_age or (total <= max_bytes and not partial):
            continue
        try:
            path.unlink()
        except OSError:
            continue
        total -= size
        deleted.append(path)
    _remove_empty_folders(cache_dir, now - min_age)
    if deleted:
        log.info("trimmed %d files from the cache %s (%d bytes left)", len(deleted), cache_dir, total)
    return deleted


def touch(path: Path) -> None:
    """Mark a cached file as used now (filesystems mounted noatime do not)."""
    try:
        os.utime(path)
    except OSError:
        pass


def _remove_empty_folders(root: Path, older_than: float) -> None:
    """Empty folders not changed since `older_than` (a younger one may be about to get its file)."""
    for folder in sorted((p for p in root.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
        try:
            if folder.stat().st_mtime < older_than:
                folder.rmdir()
        except OSError:
            pass
