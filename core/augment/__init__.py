"""Batched view generation on the training device."""
from core.augment.views import (BYOL_VIEWS, CIFAR_ASYMMETRIC_VIEWS, MOCO_V2_VIEWS, CropSpec, ViewConfig, ViewMaker,
                                normalize)

__all__ = ["BYOL_VIEWS", "CIFAR_ASYMMETRIC_VIEWS", "MOCO_V2_VIEWS", "CropSpec", "ViewConfig", "ViewMaker", "normalize"]
