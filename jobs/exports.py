"""Exported forms of a checkpoint's backbone (ONNX), made on first request and kept beside its
safetensors parts, so retention and garbage collection treat them as the checkpoint's files."""
from __future__ import annotations

import json
import math
import struct
import threading
from contextlib import nullcontext
from pathlib import Path
from typing import Callable, ContextManager

from core.checkpoint import CorruptCheckpoint, load_backbone, sha256_file, write_atomic
from jobs.checkpoints import part_key
from jobs.storage import ArtifactStore
from jobs.tables import Checkpoint

_locks: dict[str, threading.Lock] = {}  # one export of a checkpoint at a time; the result is shared
_guard = threading.Lock()
EXPORT_ERRORS = (RuntimeError, ValueError, TypeError, NotImplementedError, AttributeError, KeyError, IndexError)


class ExportFailed(RuntimeError):
    """The backbone could not be exported (an operator the exporter does not support, ...)."""


class ExportTooLarge(ExportFailed):
    """The backbone has more parameters than the service exports."""


def onnx_key(checkpoint_id: str) -> str:
    return f"checkpoints/{checkpoint_id}/backbone.onnx"


def _lock(checkpoint_id: str) -> threading.Lock:
    with _guard:
        return _locks.setdefault(checkpoint_id, threading.Lock())


def _described(store: ArtifactStore, info_key: str) -> dict | None:
    return json.loads(store.local_path(info_key).read_text()) if store.exists(info_key) else None


def safetensors_elements(path: Path) -> int:
    """Elements of every tensor of a safetensors file, from its JSON header (nothing else is read)."""
    with open(path, "rb") as f:
        (length,) = struct.unpack("<Q", f.read(8))
        if length > 100 * 1024 * 1024:
            raise CorruptCheckpoint(f"{path.name} has a {length}-byte header")
        header = json.loads(f.read(length))
    return sum(math.prod(t["shape"]) for name, t in header.items() if name != "__metadata__")


def onnx_artifact(store: ArtifactStore, checkpoint: Checkpoint, max_parameters: int | None = None,
                  admit: Callable[[], ContextManager] = nullcontext) -> tuple[Path, dict]:
    """(local path, {"sha256", "bytes"}) of the checkpoint's ONNX encoder, exported once; a
    failed export is remembered too (ExportFailed again, without a second try). A backbone over
    `max_parameters` is refused (ExportTooLarge) before it is loaded. `admit` is entered around an
    export (the API's concurrency cap), never around a cached answer. Raises CorruptCheckpoint /
    FileNotFoundError for a damaged or missing backbone part."""
    key, info_key = onnx_key(checkpoint.id), onnx_key(checkpoint.id) + ".json"
    described = _described(store, info_key)
    if described is None:
        info = checkpoint.parts["backbone"]
        source = store.local_path(info.get("key") or part_key(checkpoint.id, "backbone"))
        size = safetensors_elements(source)
        if max_parameters and size > max_parameters:
            raise ExportTooLarge(f"the backbone has {size:,} parameters; ONNX export is limited to "
                                 f"{max_parameters:,} (DARKMATTER_MAX_ONNX_PARAMETERS)")
        with admit(), _lock(checkpoint.id):
            described = _described(store, info_key) or _export(store, checkpoint, source, key, info_key)
    if "error" in described:
        raise ExportFailed(described["error"])
    return store.local_path(key), described


def _export(store: ArtifactStore, checkpoint: Checkpoint, source: Path, key: str, info_key: str) -> dict:
    from core.export import export_onnx

    if sha256_file(source) != checkpoint.parts["backbone"]["sha256"]:
        raise CorruptCheckpoint(f"checkpoint {checkpoint.id} failed its sha256 check")
    backbone, manifest = load_backbone(source)
    target = store.staging_path(key)
    try:
        export_onnx(backbone, manifest, target)
        described = {"sha256": sha256_file(target), "bytes": target.stat().st_size}
        store.commit(key)
    except EXPORT_ERRORS as exc:  # remembered: the same backbone fails the same way every time
        target.unlink(missing_ok=True)
        described = {"error": f"{type(exc).__name__}: {str(exc)[:300]}"}
    write_atomic(store.staging_path(info_key), json.dumps(described).encode())
    store.commit(info_key)
    return described
