"""Text inputs to a text checkpoint: strings tokenised with the checkpoint's own tokenizer."""
from __future__ import annotations

import torch
from fastapi import HTTPException
from torch import Tensor, nn

from api.embed_common import BadInput, check_sizes
from core.text.words import split_words

BATCH = 64
# the base64 starts of PNG, JPEG, GIF, WebP / WAV (RIFF) and FLAC files, and data URLs: an image or a
# clip sent to a text model
IMAGE_PREFIXES = ("iVBORw0KGgo", "/9j/", "R0lGOD", "UklGR", "ZkxhQ", "data:image/", "data:audio/")


def looks_like_image(text: str) -> bool:
    return text.startswith(IMAGE_PREFIXES) and not any(c.isspace() for c in text[:200])


def embed_texts(inputs: list, encoder: nn.Module, truncate: bool = True) -> tuple[Tensor, dict]:
    """((N, D) float32 embeddings, usage) of strings. BadInput for a non-string, an empty string,
    or (truncate False) a text longer than the model's max_length."""
    for i, item in enumerate(inputs):
        if not isinstance(item, str):
            raise BadInput(i, "this checkpoint embeds text: give strings")
        if not item.strip():
            raise BadInput(i, "empty text")
        if looks_like_image(item):
            raise BadInput(i, "this is a base64 image or audio file, and this checkpoint embeds text: give "
                              "strings, or use an image or audio checkpoint")
    if getattr(encoder, "embeds_words", False):
        return embed_word_texts(inputs, encoder, truncate)
    encoded = encoder.encode(inputs)
    room = encoder.max_length - 2  # [CLS] and [SEP] take two positions
    if not truncate:
        for i, (cut, count) in enumerate(zip(encoded.truncated, encoded.text_tokens)):
            if cut:
                raise BadInput(i, f"{count} tokens; the model holds {room} (send truncate: true to cut it)")
    with torch.no_grad():
        device = next(encoder.parameters()).device
        vectors = torch.cat([encoder(chunk.to(device)).float().cpu() for chunk in encoded.ids.split(BATCH)])
    truncated = [i for i, cut in enumerate(encoded.truncated) if cut]
    usage = {"inputs": len(inputs), "tokens": int(encoded.lengths.sum()), "max_length": encoder.max_length,
             "truncated": truncated, "tokens_dropped": sum(encoded.text_tokens[i] - room for i in truncated)}
    return vectors, usage


def embed_word_texts(inputs: list[str], encoder: nn.Module, truncate: bool = True) -> tuple[Tensor, dict]:
    """Word-vector checkpoints (word2vec, fastText, GloVe): each text is the mean of its words'
    unit-normalised vectors. Out-of-vocabulary words are skipped and listed in usage (`oov`);
    with `truncate` false any of them answers 422, and so does a text with no known word.
    fastText builds an unseen word from its character n-grams, so none is ever skipped."""
    vectors, missing = encoder.embed(inputs)
    for i, (text, unknown) in enumerate(zip(inputs, missing)):
        if unknown and not truncate:
            raise BadInput(i, f"unknown word(s) {', '.join(unknown[:10])}: not in the model's vocabulary of "
                              f"{len(encoder.words)} words (send truncate: true to skip them)")
        if not vectors[i].any():
            raise BadInput(i, "no word of this text is in the model's vocabulary" if unknown
                           else "no word in this text (letters or digits)")
    usage = {"inputs": len(inputs), "words": sum(len(split_words(t)) for t in inputs),
             "oov": [{"index": i, "words": unknown} for i, unknown in enumerate(missing) if unknown],
             "oov_handling": "n-gram vectors" if encoder.buckets else "skipped"}
    return vectors, usage


def embed_text_inputs(inputs: list, encoder: nn.Module, manifest: dict, settings, truncate: bool = True,
                      batching=None) -> tuple[Tensor, dict]:
    """(embeddings, usage) of a text checkpoint's inputs; 413/422 on bad input (text is not batched
    across requests: `batching` is unused)."""
    check_sizes(inputs, settings)
    try:
        return embed_texts(inputs, encoder, truncate)
    except BadInput as exc:
        raise HTTPException(422, str(exc))
