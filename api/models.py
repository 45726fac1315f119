"""A small LRU cache of loaded backbones for the embedding endpoint (verified by sha256)."""
from __future__ import annotations

import threading
from collections import OrderedDict

from torch import nn

from core.checkpoint import CorruptCheckpoint, load_backbone, sha256_file
from jobs.settings import Settings
from jobs.storage import store_for
from jobs.tables import Checkpoint


class ModelCache:
    def __init__(self, size: int):
        self.size = size
        self.models: OrderedDict[str, tuple[nn.Module, dict]] = OrderedDict()
        self.lock = threading.Lock()

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
        loaded = load_backbone(path)
        with self.lock:
            self.models[checkpoint.id] = loaded
            while len(self.models) > self.size:
                self.models.popitem(last=False)
        return loaded
