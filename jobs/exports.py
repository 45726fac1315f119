"""Exported forms of a checkpoint's backbone (ONNX), made on first request and kept beside its
safetensors parts, so retention and garbage collection treat them as the checkpoint's files."""
from __future__ import annotations

import json
import threading
from pathlib import Path

from core.checkpoint import CorruptCheckpoint, load_backbone, sha256_file, write_atomic
from jobs.checkpoints import part_key
from jobs.storage import ArtifactStore
from jobs.tables import Checkpoint

_lock = threading.Lock()  # one export at a time per process: they are CPU-heavy and the result is shared


class ExportFailed(RuntimeError):
    """The backbone could not be exported (an operator the exporter does not support, ...)."""


def onnx_key(checkpoint_id: str) -> str:
    return f"checkpoints/{checkpoint_id}/backbone.onnx"


def onnx_artifact(store: ArtifactStore, checkpoint: Checkpoint) -> tuple[Path, dict]:
    """(local path, {"sha256", "bytes"}) of the checkpoint's ONNX encoder, exporting it once.
    Raises CorruptCheckpoint / FileNotFoundError for a damaged or missing backbone part."""
    key, info_key = onnx_key(checkpoint.id), onnx_key(checkpoint.id) + ".json"
    with _lock:
        if not store.exists(info_key):
            from core.export import export_onnx

            info = checkpoint.parts["backbone"]
            source = store.local_path(info.get("key") or part_key(checkpoint.id, "backbone"))
            if sha256_file(source) != info["sha256"]:
                raise CorruptCheckpoint(f"checkpoint {checkpoint.id} failed its sha256 check")
            backbone, manifest = load_backbone(source)
            target = store.staging_path(key)
            try:
                export_onnx(backbone, manifest, target)
            except (RuntimeError, ValueError, TypeError) as exc:
                raise ExportFailed(f"{type(exc).__name__}: {str(exc)[:300]}") from exc
            store.commit(key)
            write_atomic(store.staging_path(info_key), json.dumps(
                {"sha256": sha256_file(target), "bytes": target.stat().st_size}).encode())
            store.commit(info_key)
        described = json.loads(store.local_path(info_key).read_text())
    return store.local_path(key), described
