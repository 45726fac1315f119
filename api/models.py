"""An LRU cache of loaded backbones for the embedding endpoints (verified by sha256), bounded by
the bytes of their tensors rather than by their count: one ViT-L weighs as much as 300 small CNNs."""
from __future__ import annotations

import threading
from collections import OrderedDict

from torch import nn

from core.checkpoint import CorruptCheckpoint, load_backbone, sha256_file
from jobs.settings import Settings
from jobs.storage import store_for
from jobs.tables import Checkpoint


def serving_device(settings: Settings) -> str:
    """Where loaded models run: settings.embedding_device, "auto" being the GPU when there is one."""
    if settings.embedding_device != "auto":
        return settings.embedding_device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def model_bytes(model: nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])


class ModelCache:
    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self.models: OrderedDict[str, tuple[nn.Module, dict]] = OrderedDict()
        self.lock = threading.Lock()

    @property
    def bytes(self) -> int:
        return sum(model_bytes(model) for model, _ in self.models.values())

    def get(self, settings: Settings, checkpoint: Checkpoint) -> tuple[nn.Module, dict]:
        with self.lock:
            if checkpoint.id in self.models:
                self.models.move_to_end(checkpoint.id)
                return self.models[checkpoint.id]
        info = checkpoint.parts["backbone"]
        store = store_for(settings)
        path = store.local_path(info["key"])
        if sha256_file(path) != info["sha256"]:
            store.evict(info["key"])  # a bad cached copy is not served again (downloads read the cache)
            raise CorruptCheckpoint(f"checkpoint {checkpoint.id} failed its sha256 check")
        loaded = load_backbone(path, device=serving_device(settings))
        with self.lock:
            self.models[checkpoint.id] = loaded
            while len(self.models) > 1 and self.bytes > self.max_bytes:  # the newest stays, even alone over
                self.models.popitem(last=False)
        return loaded

    def drop(self, checkpoint_id: str) -> None:
        """Forget a deleted checkpoint's model (its memory goes back now, not at eviction)."""
        with self.lock:
            self.models.pop(checkpoint_id, None)
