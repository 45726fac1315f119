"""Datasets as uint8 image tensors with integer labels."""
from core.data.arrays import ArrayDataset, DatasetUnavailable, load_source, split_by_fraction

__all__ = ["ArrayDataset", "DatasetUnavailable", "load_source", "split_by_fraction"]
