"""Datasets: uint8 image tensors with integer labels, and text documents (core.data.text)."""
from core.data.arrays import ArrayDataset, split_by_fraction
from core.data.errors import DatasetUnavailable
from core.data.sources import load_builtin, load_source

__all__ = ["ArrayDataset", "DatasetUnavailable", "load_builtin", "load_source", "split_by_fraction"]
