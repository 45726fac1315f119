"""Image embedding inputs: base64 images and pixel arrays decoded into uint8 image tensors in the
checkpoint's shape, and embedded (batched with concurrent requests for the same checkpoint)."""
from __future__ import annotations

import base64
import binascii
import io

import numpy as np
import torch
from fastapi import HTTPException
from PIL import Image, UnidentifiedImageError

from api.batching import Batcher, DeadlineExceeded, encoder_forward
from api.embed_common import BadInput, check_sizes
from core.augment import normalize
from core.data.images import PIL_FORMATS
from core.data.transforms import resize_images
from core.precision import resolve_precision

MAX_PIXELS = 4096 * 4096


def decode_image(index: int, text: str) -> np.ndarray:
    if text.startswith("data:"):
        text = text.partition(",")[2]
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise BadInput(index, "not valid base64")
    try:
        with Image.open(io.BytesIO(raw), formats=PIL_FORMATS) as image:  # never EPS (Ghostscript) and the like
            if image.width * image.height > MAX_PIXELS:
                raise BadInput(index, f"image is {image.width}x{image.height}; at most {MAX_PIXELS} pixels")
            image = image.convert("RGB" if image.mode in ("RGB", "RGBA", "P", "CMYK", "YCbCr") else "L")
            array = np.asarray(image)
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError):
        raise BadInput(index, f"not a readable image (accepted formats: {', '.join(PIL_FORMATS)})")
    return array if array.ndim == 3 else array[..., None]  # (H, W, C)


def decode_array(index: int, values: list) -> np.ndarray:
    try:
        array = np.asarray(values, dtype=np.float64)
    except (ValueError, TypeError):
        raise BadInput(index, "pixel arrays must be rectangular lists of numbers")
    if array.ndim == 2:
        array = array[..., None]
    elif array.ndim == 3 and array.shape[0] in (1, 3) and array.shape[-1] not in (1, 3):
        array = array.transpose(1, 2, 0)
    if array.size > 3 * MAX_PIXELS:
        raise BadInput(index, f"pixel array has {array.size} values; at most {3 * MAX_PIXELS}")
    if array.ndim != 3 or array.shape[-1] not in (1, 3) or min(array.shape[:2]) < 1:
        raise BadInput(index, f"expected H x W, H x W x C or C x H x W with C in (1, 3); got shape {array.shape}")
    if not np.isfinite(array).all() or array.min() < 0 or array.max() > 255:
        raise BadInput(index, "pixel values must be finite and in [0, 255]")
    return np.round(array).astype(np.uint8)


def to_model_input(index: int, array: np.ndarray, channels: int, size: int) -> torch.Tensor:
    """(H, W, C) uint8 -> (channels, size, size) uint8 in the checkpoint's expected shape."""
    x = torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1)
    if x.shape[0] == 3 and channels == 1:
        x = (x.float() * torch.tensor([0.299, 0.587, 0.114]).view(3, 1, 1)).sum(0, keepdim=True)
    elif x.shape[0] == 1 and channels == 3:
        x = x.expand(3, -1, -1)
    return resize_images(x[None], size)[0]  # uint8 of the model's size already: returned as is


def embed_inputs(inputs: list, encoder, manifest: dict, settings, batching: tuple[Batcher, str] | None = None
                 ) -> tuple[torch.Tensor, str]:
    """((N, D) float32 embeddings, the precision they were computed in) of base64 images / pixel
    arrays; 413/422 on bad input. With `batching` (the batcher, the checkpoint id) the forward pass
    is shared with concurrent requests."""
    check_sizes(inputs, settings)
    channels, _, size = manifest["input_size"]
    images = []
    try:
        for i, item in enumerate(inputs):
            if isinstance(item, str):
                array = decode_image(i, item)
            elif isinstance(item, list):
                array = decode_array(i, item)
            else:
                raise BadInput(i, "expected a base64 image or a pixel array")
            images.append(to_model_input(i, array, channels, size))
    except BadInput as exc:
        raise HTTPException(422, f"{exc} (this checkpoint embeds images: base64 PNG/JPEG or pixel arrays)")
    norm = manifest["normalization"]
    x = normalize(torch.stack(images).float() / 255, norm["mean"], norm["std"])

    precision = resolve_precision(settings.embedding_precision, next(encoder.parameters()).device)
    forward = encoder_forward(encoder, precision)
    if batching is None:
        return forward(x), precision
    try:
        return batching[0].run(batching[1], forward, x, settings.embedding_deadline_s), precision
    except DeadlineExceeded as exc:
        raise HTTPException(503, f"the model is busy: {exc}; retry", headers={"Retry-After": "1"})


def embed_images(inputs: list, encoder, manifest: dict, settings, truncate: bool = True,
                 batching: tuple[Batcher, str] | None = None) -> tuple[torch.Tensor, dict]:
    """(embeddings, usage) of an image checkpoint's inputs (`truncate` is text's: unused here)."""
    vectors, precision = embed_inputs(inputs, encoder, manifest, settings, batching)
    return vectors, {"inputs": len(vectors), "precision": precision}
