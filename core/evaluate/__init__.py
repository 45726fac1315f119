"""Frozen-feature evaluation protocols."""
from core.evaluate.features import extract_features
from core.evaluate.knn import knn_accuracy, knn_predict

__all__ = ["extract_features", "knn_accuracy", "knn_predict"]
