"""The API's modality table: per modality (core.modalities), how /v1/embeddings and /v1/neighbors
read and embed a checkpoint's inputs. api/routers/embeddings.py dispatches on the checkpoint's
manifest.

To add a modality: a module of its inputs (like api/text_inputs.py: parse and check
each input, raising api.embed_common.BadInput, embed them with the checkpoint's encoder, answer
413/422 on bad input) and one entry below. It imports api.embed_common, never another modality's
inputs module."""
from __future__ import annotations

from api import audio_inputs, inputs, text_inputs
from core.modalities import AUDIO, IMAGE, TEXT

# (inputs, encoder, manifest, settings, truncate, batching) -> ((N, D) float32 embeddings, usage)
EMBED = {IMAGE: inputs.embed_images, TEXT: text_inputs.embed_text_inputs, AUDIO: audio_inputs.embed_audio_inputs}
