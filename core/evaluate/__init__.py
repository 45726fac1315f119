"""Frozen-feature evaluation protocols (kNN, linear probe, few-shot, clustering, health) and
fine-tuning."""
from core.evaluate.features import extract_features
from core.evaluate.finetune import finetune
from core.evaluate.health import collapse_reason, health_stats
from core.evaluate.knn import knn_accuracy, knn_predict
from core.evaluate.protocols import PROTOCOLS, protocol_names, run_protocol

__all__ = ["PROTOCOLS", "collapse_reason", "extract_features", "finetune", "health_stats", "knn_accuracy",
           "knn_predict", "protocol_names", "run_protocol"]
