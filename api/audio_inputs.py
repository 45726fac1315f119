"""Audio inputs to an audio checkpoint: base64 WAV/FLAC files, decoded with soundfile, mixed to mono
and resampled to the model's rate (core.data.audio.decode), embedded as mean-pooled frames."""
from __future__ import annotations

import base64
import binascii
import io

import torch
from fastapi import HTTPException
from torch import Tensor, nn

from api.embed_common import BadInput, check_sizes
from core.data.audio import SAMPLE_RATE, decode, from_clips

BATCH = 16
HINT = "this checkpoint embeds audio: base64 WAV or FLAC files"


class TooLong(BadInput):
    pass


def decode_clip(index: int, item, max_seconds: float):
    """One input -> int16 mono samples at the model's rate; BadInput (TooLong past max_seconds)."""
    if not isinstance(item, str):
        raise BadInput(index, "expected a base64 WAV or FLAC file")
    if item.startswith("data:"):
        item = item.partition(",")[2]
    try:
        raw = base64.b64decode(item, validate=True)
    except (binascii.Error, ValueError):
        raise BadInput(index, "not valid base64")
    import soundfile as sf

    try:
        info = sf.info(io.BytesIO(raw))
    except Exception:  # soundfile raises its own LibsndfileError (a RuntimeError) or TypeError
        raise BadInput(index, "not readable audio (accepted: WAV, FLAC)")
    if info.samplerate > 0 and info.frames > max_seconds * info.samplerate:
        raise TooLong(index, f"{info.frames / info.samplerate:.1f} s; at most {max_seconds:g} s "
                             "(DARKMATTER_MAX_EMBEDDING_AUDIO_SECONDS)")
    try:
        clip, _ = decode(raw, SAMPLE_RATE, max_seconds)
    except ValueError as exc:
        raise BadInput(index, str(exc))
    return clip


def embed_clips(clips: list, encoder: nn.Module) -> Tensor:
    """(N, feature_dim) float32: the encoder's frames averaged over each clip, batched by length."""
    data = from_clips(clips, [-1] * len(clips), [])
    device = next(encoder.parameters()).device
    out = torch.zeros(len(data), encoder.feature_dim)
    order = torch.argsort(data.lengths, stable=True)
    with torch.no_grad():
        for chunk in order.split(BATCH):
            batch = data.subset(chunk).padded(int(data.lengths.max()))
            out[chunk] = encoder(batch.to(device)).float().cpu()
    return out


def embed_audio_inputs(inputs: list, encoder: nn.Module, manifest: dict, settings, truncate: bool = True,
                       batching=None) -> tuple[Tensor, dict]:
    """(embeddings, usage) of an audio checkpoint's inputs; 413 for a clip over the duration limit,
    422 for anything not readable as audio (`truncate` is text's, and audio is not batched across
    requests: both unused)."""
    check_sizes(inputs, settings)
    try:
        clips = [decode_clip(i, item, settings.max_embedding_audio_seconds) for i, item in enumerate(inputs)]
    except TooLong as exc:
        raise HTTPException(413, str(exc))
    except BadInput as exc:
        raise HTTPException(422, f"{exc} ({HINT})")
    vectors = embed_clips(clips, encoder)
    usage = {"inputs": len(clips), "sample_rate": SAMPLE_RATE,
             "seconds": round(sum(len(c) for c in clips) / SAMPLE_RATE, 3)}
    return vectors, usage
