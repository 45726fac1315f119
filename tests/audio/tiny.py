"""A tiny wav2vec 2.0 and word-like clips for fast tests."""
from __future__ import annotations

import numpy as np
import torch

from core.data.audio import PAD, from_clips, to_int16
from core.methods.wav2vec2 import build_audio
from core.recipes import resolve

TINY = {"conv_channels": 16, "dim": 32, "depth": 1, "heads": 2, "ffn_dim": 64, "conv_pos": 16, "conv_pos_groups": 4}


def tiny_method(seed: int = 0, steps: int = 10, **method_options):
    recipe = resolve("wav2vec2", 0, 64, {"scale": "small", "steps": steps, "batch_size": 8,
                                         "schedule_points": "proportional", "backbone_options": TINY,
                                         "method_options": {"final_dim": 16, "codebook_entries": 16,
                                                            "num_negatives": 10, **method_options}})
    torch.manual_seed(seed)
    return build_audio(recipe), recipe


def word_like(n: int = 32, seconds: float = 0.3, rate: int = 16_000, seed: int = 0):
    """Two-tone 'words' of varying length: class = which pair of tones, with noise."""
    rng = np.random.default_rng(seed)
    clips, labels = [], []
    for i in range(n):
        label = i % 4
        length = int(rate * seconds * rng.uniform(0.7, 1.0))
        t = np.arange(length) / rate
        f1, f2 = 300 + 150 * label, 900 + 200 * (3 - label)
        half = length // 2
        wave = np.where(np.arange(length) < half, np.sin(2 * np.pi * f1 * t), np.sin(2 * np.pi * f2 * t))
        clips.append(to_int16(0.5 * wave + 0.05 * rng.standard_normal(length)))
        labels.append(label)
    return from_clips(clips, labels, ["a", "b", "c", "d"])


def padded(data, width: int) -> torch.Tensor:
    out = data.padded(width)
    return torch.nn.functional.pad(out, (0, width - out.shape[1]), value=PAD)
