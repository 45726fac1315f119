"""Audio datasets: WAV/FLAC read with soundfile, mixed to mono, resampled to 16 kHz with
scipy's polyphase resampler, kept as int16; and the padded int16 batches the audio methods train on.

Storage: every clip back to back in one int16 array with offsets (no padding in memory). Training
batches are cut from `AudioDataset.padded(max_samples)`: (N, T) int16 where PAD (-32768, which no
stored sample takes: samples are clipped to +-32767) marks the padding, so a batch carries its
own lengths, as text batches carry PAD tokens."""
from __future__ import annotations

import hashlib
import io
import re
from dataclasses import dataclass, field
from math import gcd
from pathlib import PurePosixPath
from typing import Iterable

import numpy as np
import torch
from torch import Tensor

from core.data.arrays import DatasetUnavailable

SAMPLE_RATE = 16_000
PAD = -32768  # int16 min: padding in a batch; stored samples are clipped to [-32767, 32767]
AUDIO_SUFFIXES = (".wav", ".flac")
MIN_RATE, MAX_RATE = 4_000, 192_000  # outside: refused as absurd
MAX_SECONDS = 30.0  # a clip longer than this is refused (ScanLimits.max_seconds)


def _reason(exc: Exception) -> str:
    """soundfile's message without the in-memory file's repr ("Error opening <_io.BytesIO object at
    0x…>: Format not recognised." -> "Format not recognised.")."""
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return re.sub(r"^Error opening <[^>]*>: ", "", text)


@dataclass
class AudioDataset:
    """samples: (S,) int16, the clips back to back; offsets: (N + 1,) int64 (clip i is
    samples[offsets[i]:offsets[i + 1]]); labels: (N,) int64, -1 where unlabelled."""

    samples: Tensor
    offsets: Tensor
    labels: Tensor
    classes: list[str] = field(default_factory=list)
    sample_rate: int = SAMPLE_RATE

    def __post_init__(self) -> None:
        if self.samples.dtype != torch.int16 or self.samples.ndim != 1:
            raise ValueError("samples must be a 1-D int16 tensor")
        if self.offsets.ndim != 1 or len(self.offsets) != len(self.labels) + 1:
            raise ValueError("offsets must hold one more entry than labels")
        if len(self.offsets) and (int(self.offsets[0]) != 0 or int(self.offsets[-1]) != len(self.samples)):
            raise ValueError("offsets must start at 0 and end at len(samples)")

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def lengths(self) -> Tensor:
        return self.offsets[1:] - self.offsets[:-1]

    def clip(self, i: int) -> Tensor:
        return self.samples[int(self.offsets[i]) : int(self.offsets[i + 1])]

    def subset(self, index: Tensor | list[int]) -> "AudioDataset":
        index = torch.as_tensor(index, dtype=torch.int64)
        clips = [self.clip(int(i)) for i in index]
        return from_clips(clips, self.labels[index], self.classes, self.sample_rate)

    def padded(self, max_samples: int) -> Tensor:
        """(N, T) int16, T = min(longest clip, max_samples): each clip from its start, cut at
        max_samples, PAD after its end."""
        lengths = self.lengths.clamp(max=max_samples)
        width = int(lengths.max()) if len(self) else 0
        out = torch.full((len(self), width), PAD, dtype=torch.int16)
        for i, n in enumerate(lengths.tolist()):
            out[i, :n] = self.clip(i)[:n]
        return out

    def content_hash(self) -> str:
        h = hashlib.sha256()
        for tensor in (self.samples, self.offsets, self.labels):
            h.update(np.ascontiguousarray(tensor.numpy()).tobytes())
        h.update("\0".join(self.classes).encode() + f"@{self.sample_rate}".encode())
        return h.hexdigest()


def from_clips(clips: list, labels, classes: list[str], sample_rate: int = SAMPLE_RATE) -> AudioDataset:
    """An AudioDataset from a list of 1-D int16 arrays or tensors."""
    lengths = torch.tensor([len(c) for c in clips], dtype=torch.int64)
    offsets = torch.cat([torch.zeros(1, dtype=torch.int64), lengths.cumsum(0)])
    samples = (torch.cat([torch.as_tensor(np.asarray(c, dtype=np.int16)) for c in clips]) if clips
               else torch.zeros(0, dtype=torch.int16))
    return AudioDataset(samples, offsets, torch.as_tensor(labels, dtype=torch.int64).reshape(-1), list(classes),
                        sample_rate)


def waveforms(batch: Tensor) -> tuple[Tensor, Tensor]:
    """A padded int16 batch (B, T) -> (float waveforms in [-1, 1] with zeros at the padding,
    padding mask (B, T) bool, True at PAD). Tensor ops only: no host sync."""
    padding = batch == PAD
    return (batch.float() / 32768).masked_fill(padding, 0.0), padding


def to_int16(audio: np.ndarray) -> np.ndarray:
    """Float samples in [-1, 1] -> int16 in [-32767, 32767] (PAD is never a sample)."""
    return np.clip(np.round(audio * 32768), -32767, 32767).astype(np.int16)


def resample(audio: np.ndarray, rate: int, target: int = SAMPLE_RATE) -> np.ndarray:
    """Polyphase resampling (scipy.signal.resample_poly, Kaiser-windowed FIR) from `rate` to
    `target`; float64 in, float64 out, length ceil(n * target / rate)."""
    if rate == target:
        return audio
    from scipy.signal import resample_poly

    g = gcd(rate, target)
    return resample_poly(audio, target // g, rate // g)


def decode(data: bytes, target: int = SAMPLE_RATE, max_seconds: float = MAX_SECONDS) -> tuple[np.ndarray, int]:
    """The bytes of a WAV/FLAC file -> (mono int16 at `target` Hz, the file's own rate). Raises
    ValueError with the reason when the file is not usable audio."""
    import soundfile as sf

    try:
        info = sf.info(io.BytesIO(data))
    except Exception as exc:  # soundfile raises its own LibsndfileError (a RuntimeError) or TypeError
        raise ValueError(f"not readable audio ({_reason(exc)})")
    if not MIN_RATE <= info.samplerate <= MAX_RATE:
        raise ValueError(f"sample rate {info.samplerate} Hz is outside {MIN_RATE}-{MAX_RATE} Hz")
    if info.frames <= 0:
        raise ValueError("zero length")
    if info.frames > max_seconds * info.samplerate:
        raise ValueError(f"{info.frames / info.samplerate:.1f} s is longer than the {max_seconds:g} s limit")
    try:
        audio, rate = sf.read(io.BytesIO(data), dtype="float64", always_2d=True)
    except Exception as exc:
        raise ValueError(f"unreadable audio ({_reason(exc)})")
    if len(audio) == 0:
        raise ValueError("zero length")
    mono = audio.mean(axis=1)
    return to_int16(resample(mono, rate, target)), rate


@dataclass
class AudioScan:
    """What scan_audio found: the clips, their class names, statistics and the refused files."""

    data: AudioDataset
    paths: list[str]
    stats: dict
    bad_files: list[dict]  # {"path", "reason"}


def scan_audio(files: Iterable[tuple[str, bytes]], target: int = SAMPLE_RATE,
               max_seconds: float = MAX_SECONDS) -> AudioScan:
    """Decode (relative path, bytes) pairs (core.data.scan.iter_folder, core.data.archives.iter_members):
    every .wav/.flac file is a clip labelled by its parent folder's name (unlabelled, -1, when
    no file has a parent folder). Files that fail are listed with their reason, never raised;
    other suffixes are listed as 'not audio'. Raises DatasetUnavailable when no clip is usable."""
    clips, folders, paths, rates, bad = [], [], [], [], []
    for path, data in files:
        if not path.lower().endswith(AUDIO_SUFFIXES):
            bad.append({"path": path, "reason": "not audio (expected .wav or .flac)"})
            continue
        try:
            clip, rate = decode(data, target, max_seconds)
        except ValueError as exc:
            bad.append({"path": path, "reason": str(exc)})
            continue
        clips.append(clip)
        rates.append(rate)
        paths.append(path)
        parent = PurePosixPath(path).parent.name
        folders.append(parent)
    if not clips:
        reasons = "; ".join(f"{b['path']}: {b['reason']}" for b in bad[:5])
        raise DatasetUnavailable(f"no usable audio clip found{' (' + reasons + ')' if reasons else ''}")
    labelled = any(folders)
    classes = sorted(set(folders)) if labelled else []
    index = {name: i for i, name in enumerate(classes)}
    labels = [index[f] if labelled else -1 for f in folders]
    data = from_clips(clips, labels, classes, target)
    seconds = data.lengths.double() / target
    stats = {"modality": "audio", "n_clips": len(data), "sample_rate": target,
             "seconds": {"min": float(seconds.min()), "median": float(seconds.median()),
                         "max": float(seconds.max()), "total": float(seconds.sum())},
             "original_rates": sorted(set(rates)), "n_classes": len(classes), "classes": classes,
             "labelled": labelled, "n_bad_files": len(bad)}
    return AudioScan(data, paths, stats, bad)


def read_paths(paths: Iterable[str]) -> Iterable[tuple[str, bytes]]:
    """(path, bytes) for a list of local files, for scan_audio."""
    for path in paths:
        with open(path, "rb") as f:
            yield str(path), f.read()
