"""Frozen audio features for the feature protocols (core.evaluate.protocols): a wav2vec 2.0
encoder's frames averaged over each clip, and the MFCC baseline."""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from core.data.audio import AudioDataset

MAX_SAMPLES = 16_000 * 30


@torch.no_grad()
def audio_features(encoder: nn.Module, data: AudioDataset, batch_size: int = 64, max_samples: int = MAX_SAMPLES,
                   device: str | torch.device = "cpu") -> Tensor:
    """(N, feature_dim) float32 on the CPU, in the dataset's order: the encoder's output frames
    averaged over each clip's own frames (clips cut at max_samples; batches of similar length)."""
    encoder = encoder.to(device).eval()
    out = torch.zeros(len(data), encoder.feature_dim)
    order = torch.argsort(data.lengths, stable=True)
    for chunk in order.split(batch_size):
        batch = data.subset(chunk).padded(max_samples).to(device)
        out[chunk] = encoder(batch).float().cpu()
    return out


def mfcc_features(data: AudioDataset, numcep: int = 13) -> Tensor:
    """The MFCC baseline (python_speech_features: 25 ms windows every 10 ms, 26 mel filters,
    `numcep` cepstra with log energy as the first): per clip, the mean and standard deviation
    over frames of the cepstra and their deltas: (N, 4 * numcep) float32."""
    from python_speech_features import delta, mfcc

    rows = []
    for i in range(len(data)):
        signal = data.clip(i).numpy().astype(np.float64) / 32768
        cepstra = mfcc(signal, samplerate=data.sample_rate, numcep=numcep, nfft=512)
        frames = np.concatenate([cepstra, delta(cepstra, 2)], axis=1)
        rows.append(np.concatenate([frames.mean(0), frames.std(0)]))
    return torch.from_numpy(np.stack(rows).astype(np.float32)) if rows else torch.zeros(0, 4 * numcep)
