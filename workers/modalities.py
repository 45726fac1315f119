"""The workers' modality table: per modality (core.modalities), how a job of it trains, evaluates
and indexes. workers/pretrain.py, workers/evaluate.py and workers/embed_index.py dispatch through
these dicts: PRETRAIN on the method's trainer (its modality, or `words` for word vectors), the
others on the dataset's modality.

To add a modality: a module that trains it (like workers/pretrain_text.py: load the
splits, build the method from its resolved recipe, run core.train.train with
workers.training.ServiceCallbacks) and one that evaluates it (like workers/evaluate_text.py: open
a checkpoint or a baseline as a workers.eval_common.Source, featurize a split, run the protocols
through workers.eval_common.run_protocols); then one entry in each dict below. Those modules
import the shared ones (workers.training, workers.eval_common), never another modality's."""
from __future__ import annotations

from core.methods import method_info
from core.modalities import AUDIO, IMAGE, TEXT, WORDS, of_stats
from workers import (evaluate_audio, evaluate_image, evaluate_text, pretrain_audio, pretrain_image, pretrain_text,
                     pretrain_words)

# (ctx, spec, raw_spec, dataset_row, device) -> (state, result, error)
PRETRAIN = {IMAGE: pretrain_image.run_pretrain_image, TEXT: pretrain_text.run_pretrain_text,
            WORDS: pretrain_words.run_pretrain_words, AUDIO: pretrain_audio.run_pretrain_audio}
# (ctx, spec, dataset_row, device) -> (state, result, error)
EVALUATE = {IMAGE: evaluate_image.run_evaluate_image, TEXT: evaluate_text.run_evaluate_text,
            AUDIO: evaluate_audio.run_evaluate_audio}
# (ctx, spec, dataset_row, device) -> (the split's items with .labels, their features), or None once stopped
INDEX_FEATURES = {IMAGE: evaluate_image.index_features_image, TEXT: evaluate_text.text_index_features,
                  AUDIO: evaluate_audio.audio_index_features}


def trainer(dataset_row, method: str) -> str:
    """The PRETRAIN key of a job: its dataset's modality, refined by the method's own trainer
    (word vectors train on text their own way)."""
    modality, info = of_stats(dataset_row.stats), method_info(method)
    return info.trainer if info.modality == modality else modality
