"""Checkpoints as safetensors files: tensors plus a JSON manifest in the header metadata.

Nested training state (optimiser state, schedules) is flattened to named tensors plus a JSON
skeleton, so nothing is ever pickled and only safetensors is ever loaded."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save as st_save
from torch import Tensor, nn

MANIFEST_KEY = "darkmatter.manifest"
SKELETON_KEY = "darkmatter.skeleton"


class CorruptCheckpoint(ValueError):
    """A checkpoint file is torn, tampered with or not a darkmatter checkpoint."""


def flatten(tree, prefix: str = "") -> tuple[dict[str, Tensor], object]:
    """Split a nested dict/list of tensors and JSON scalars into {path: tensor} and a skeleton."""
    tensors: dict[str, Tensor] = {}

    def walk(node, path):
        if isinstance(node, Tensor):
            tensors[path] = node.detach().cpu().contiguous()
            return {"$t": path}
        if isinstance(node, dict):
            return {"$d": [[k if isinstance(k, str) else {"$int": k}, walk(v, f"{path}/{k}")] for k, v in node.items()]}
        if isinstance(node, (list, tuple)):
            return [walk(v, f"{path}/{i}") for i, v in enumerate(node)]
        if node is None or isinstance(node, (bool, int, float, str)):
            return node
        raise TypeError(f"cannot store {type(node).__name__} at {path}")

    return tensors, walk(tree, prefix)


def unflatten(skeleton, tensors: dict[str, Tensor]):
    if isinstance(skeleton, dict) and "$t" in skeleton:
        return tensors[skeleton["$t"]]
    if isinstance(skeleton, dict) and "$d" in skeleton:
        return {(k["$int"] if isinstance(k, dict) else k): unflatten(v, tensors) for k, v in skeleton["$d"]}
    if isinstance(skeleton, list):
        return [unflatten(v, tensors) for v in skeleton]
    return skeleton


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_atomic(path: str | Path, data: bytes) -> None:
    """Temp file + fsync + rename, so a reader sees the old file or the whole new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def save_tree(path: str | Path, tree, manifest: dict | None = None) -> tuple[str, int]:
    """Save a nested state tree; returns (sha256, bytes)."""
    tensors, skeleton = flatten(tree)
    metadata = {SKELETON_KEY: json.dumps(skeleton), MANIFEST_KEY: json.dumps(manifest or {})}
    data = st_save(tensors, metadata=metadata)
    write_atomic(path, data)
    return hashlib.sha256(data).hexdigest(), len(data)


def load_tree(path: str | Path, expected_sha256: str | None = None, device: str = "cpu") -> tuple[object, dict]:
    """Load (tree, manifest); with expected_sha256, a mismatching file raises CorruptCheckpoint."""
    if expected_sha256 is not None and sha256_file(path) != expected_sha256:
        raise CorruptCheckpoint(f"{path} does not match its recorded sha256")
    try:
        with safe_open(str(path), framework="pt", device=device) as f:
            metadata = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:  # safetensors raises several types for torn headers
        raise CorruptCheckpoint(f"{path} is not a readable safetensors file: {exc}") from exc
    if SKELETON_KEY not in metadata:
        raise CorruptCheckpoint(f"{path} has no darkmatter skeleton")
    return unflatten(json.loads(metadata[SKELETON_KEY]), tensors), json.loads(metadata.get(MANIFEST_KEY, "{}"))


def read_manifest(path: str | Path) -> dict:
    with safe_open(str(path), framework="pt") as f:
        return json.loads((f.metadata() or {}).get(MANIFEST_KEY, "{}"))


def load_backbone(path: str | Path, device: str = "cpu") -> tuple[nn.Module, dict]:
    """Rebuild a downloaded backbone part: returns (model in eval mode, manifest)."""
    from core.backbones import build_backbone

    state, manifest = load_tree(path, device=device)
    config = dict(manifest["backbone"])
    model = build_backbone(config.pop("name"), **config)
    model.load_state_dict(state)
    return model.to(device).eval(), manifest
