"""OpenAI-style embeddings from any checkpoint's backbone: images for image models, strings for
text models (tokenised with the checkpoint's own tokenizer), WAV/FLAC clips for audio models."""
from __future__ import annotations

import base64
from typing import Literal, Union

import torch
from fastapi import APIRouter, HTTPException, Request
from pydantic import BaseModel, ConfigDict, Field, field_validator

from api.batching import Batcher
from api.deps import ProjectDep, SessionDep, SettingsDep
from api.embed_common import check_sizes
from api.modalities import EMBED
from api.models import ModelCache
from api.routers.checkpoints import get_checkpoint
from core.checkpoint import CorruptCheckpoint
from core.modalities import of_manifest

router = APIRouter(tags=["embeddings"])

Item = Union[str, list]


class EmbeddingRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: str = Field(description="a checkpoint id")
    input: Union[str, list[Item]] = Field(description="image checkpoints: base64 images (PNG/JPEG) or pixel arrays "
                                                      "(H x W [x C], 0..255); text checkpoints: strings; audio "
                                                      "checkpoints: base64 WAV or FLAC files; one string alone "
                                                      "is a list of one (as in OpenAI's API)")
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


def batcher(request: Request) -> Batcher:
    app = request.app
    if not hasattr(app.state, "batcher"):
        settings = app.state.settings
        app.state.batcher = Batcher(settings.embedding_max_batch, settings.embedding_max_wait_ms)
    return app.state.batcher


def embed_any(inputs: list, encoder, manifest: dict, settings, truncate: bool = True,
              batching: tuple[Batcher, str] | None = None) -> tuple[torch.Tensor, dict]:
    """(embeddings, usage) with the checkpoint's modality's inputs (api/modalities.py): strings for
    text models, images for image models (batched with concurrent requests for the same checkpoint)."""
    return EMBED[of_manifest(manifest)](inputs, encoder, manifest, settings, truncate, batching)


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
