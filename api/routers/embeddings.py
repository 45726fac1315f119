"""OpenAI-style embeddings from any checkpoint's backbone: images for image models, strings for
text models (tokenised with the checkpoint's own tokenizer)."""
from __future__ import annotations

import base64
from typing import Literal, Union

import torch
from fastapi import APIRouter, HTTPException, Request
from pydantic import BaseModel, ConfigDict, Field, field_validator

from api.deps import ProjectDep, SessionDep, SettingsDep
from api.inputs import BadInput, decode_array, decode_image, to_model_input
from api.batching import Batcher, DeadlineExceeded, encoder_forward
from api.text_inputs import embed_texts
from api.models import ModelCache
from api.routers.checkpoints import get_checkpoint
from core.augment import normalize
from core.checkpoint import CorruptCheckpoint
from core.precision import resolve_precision

router = APIRouter(tags=["embeddings"])

Item = Union[str, list]


class EmbeddingRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: str = Field(description="a checkpoint id")
    input: Union[str, list[Item]] = Field(description="image checkpoints: base64 images (PNG/JPEG) or pixel arrays "
                                                      "(H x W [x C], 0..255); text checkpoints: strings; one "
                                                      "string alone is a list of one (as in OpenAI's API)")
    encoding_format: Literal["float", "base64"] = "float"
    truncate: bool = Field(True, description="text: cut a text longer than the model's max_length (reported in "
                                             "usage); false answers 422 instead")

    @field_validator("input")
    @classmethod
    def as_list(cls, value):
        if isinstance(value, str):
            return [value]
        if not value:
            raise ValueError("input must hold at least one item")
        return value


def cache(request: Request) -> ModelCache:
    app = request.app
    if not hasattr(app.state, "model_cache"):
        app.state.model_cache = ModelCache(app.state.settings.model_cache_bytes)
    return app.state.model_cache


def load_encoder(request: Request, settings, session, project: str, checkpoint_id: str):
    """(encoder, manifest) of a checkpoint of this project from the loaded-model cache; 404/410.
    Closes the session: the request's database connection goes back to the pool before the
    forward pass, so that requests waiting for a batch hold none (64 of them would drain it)."""
    checkpoint = get_checkpoint(session, project, checkpoint_id)
    session.close()
    try:
        return cache(request).get(settings, checkpoint)
    except (CorruptCheckpoint, FileNotFoundError) as exc:
        raise HTTPException(410, f"checkpoint {checkpoint_id} cannot be loaded: {exc}")


def check_sizes(inputs: list, settings) -> None:
    """413 for an encoded image over max_embedding_input_bytes, before anything is decoded or loaded."""
    for i, item in enumerate(inputs):
        if isinstance(item, str) and len(item) > settings.max_embedding_input_bytes:
            raise HTTPException(413, f"input[{i}] is larger than {settings.max_embedding_input_bytes} bytes")


def batcher(request: Request) -> Batcher:
    app = request.app
    if not hasattr(app.state, "batcher"):
        settings = app.state.settings
        app.state.batcher = Batcher(settings.embedding_max_batch, settings.embedding_max_wait_ms)
    return app.state.batcher


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


def embed_any(inputs: list, encoder, manifest: dict, settings, truncate: bool = True,
              batching: tuple[Batcher, str] | None = None) -> tuple[torch.Tensor, dict]:
    """(embeddings, usage) for the checkpoint's modality: strings for text models, images else
    (images batched with concurrent requests for the same checkpoint)."""
    if manifest.get("modality") == "text":
        check_sizes(inputs, settings)
        try:
            return embed_texts(inputs, encoder, truncate)
        except BadInput as exc:
            raise HTTPException(422, str(exc))
    vectors, precision = embed_inputs(inputs, encoder, manifest, settings, batching)
    return vectors, {"inputs": len(vectors), "precision": precision}


@router.post("/embeddings")
def embeddings(body: EmbeddingRequest, request: Request, session: SessionDep, settings: SettingsDep,
               project: ProjectDep) -> dict:
    if len(body.input) > settings.max_embedding_inputs:
        raise HTTPException(413, f"{len(body.input)} inputs; at most {settings.max_embedding_inputs} per request")
    check_sizes(body.input, settings)
    encoder, manifest = load_encoder(request, settings, session, project, body.model)
    vectors, usage = embed_any(body.input, encoder, manifest, settings, body.truncate, (batcher(request), body.model))
    vectors = vectors.numpy()
    data = []
    for i, vector in enumerate(vectors):
        value = (base64.b64encode(vector.astype("<f4").tobytes()).decode() if body.encoding_format == "base64"
                 else [float(v) for v in vector])
        data.append({"object": "embedding", "index": i, "embedding": value})
    return {"object": "list", "model": body.model, "data": data,
            "dimensions": int(vectors.shape[1]), "usage": usage}
