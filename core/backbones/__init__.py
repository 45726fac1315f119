"""Backbones: each maps (B, C, H, W) images (or, for text, (B, L) token ids) to (B, feature_dim) features."""
from __future__ import annotations

from torch import nn

from core.backbones.registry import BACKBONES, MODALITIES, register_backbone

__all__ = ["BACKBONES", "backbone_modality", "backbone_names", "build_backbone", "register_backbone"]


def build_backbone(name: str, in_channels: int = 3, image_size: int = 32, **options) -> nn.Module:
    """Build a backbone by name; the module has `.feature_dim` and `.config` (kwargs to rebuild it)."""
    _load_all()
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; choose one of {', '.join(sorted(BACKBONES))}")
    model = BACKBONES[name](in_channels=in_channels, image_size=image_size, **options)
    model.config = {"name": name, "in_channels": in_channels, "image_size": image_size, **options}
    if isinstance(getattr(model, "pool", None), str):  # a ViT's readout, recorded even when defaulted
        model.config["pool"] = model.pool
    return model


def backbone_names() -> list[str]:
    _load_all()
    return sorted(BACKBONES)


def backbone_modality(name: str) -> str | None:
    """The modality a backbone embeds (None for an unknown name)."""
    _load_all()
    return MODALITIES.get(name)


def _load_all() -> None:
    from core.backbones import cnn, regnet, resnet, text, vit, wav2vec2, word_vectors  # noqa: F401  (registers)
