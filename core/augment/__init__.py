"""Batched view generation on the training device."""
from core.augment.views import CropSpec, ViewConfig, ViewMaker, normalize

__all__ = ["CropSpec", "ViewConfig", "ViewMaker", "normalize"]
