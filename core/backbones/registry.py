"""The backbone registry: each backbone module registers its builders here by name."""
from __future__ import annotations

from typing import Callable

from torch import nn

from core.modalities import IMAGE

BACKBONES: dict[str, Callable[..., nn.Module]] = {}
MODALITIES: dict[str, str] = {}  # backbone name -> the modality of its inputs


def register_backbone(name: str, modality: str = IMAGE):
    def wrap(fn):
        BACKBONES[name] = fn
        MODALITIES[name] = modality
        return fn

    return wrap
