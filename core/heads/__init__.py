"""Projection and prediction heads."""
from core.heads.mlp import mlp

__all__ = ["mlp"]
