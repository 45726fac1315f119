"""Nearest words of a word-vector checkpoint (word2vec, fastText, GloVe): cosine over its vocabulary."""
from __future__ import annotations

from fastapi import APIRouter, HTTPException, Request
from pydantic import BaseModel, ConfigDict, Field

from api.deps import ProjectDep, SessionDep, SettingsDep
from api.routers.embeddings import load_encoder
from core.text.words import split_words

router = APIRouter(tags=["neighbors"])


class WordNeighborsRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: str = Field(description="a word-vector checkpoint id (word2vec, word2vec_cbow, fasttext, glove)")
    words: list[str] = Field(min_length=1, max_length=100, description="one word each")
    k: int = Field(10, ge=1, le=1000)


@router.post("/words/neighbors")
def word_neighbors(body: WordNeighborsRequest, request: Request, session: SessionDep, settings: SettingsDep,
                   project: ProjectDep) -> dict:
    encoder, manifest = load_encoder(request, settings, session, project, body.model)
    if not getattr(encoder, "embeds_words", False):
        raise HTTPException(422, f"checkpoint {body.model} ({manifest.get('method')}) has no word vectors: "
                                 "word neighbours need word2vec, word2vec_cbow, fasttext or glove")
    data = []
    for i, text in enumerate(body.words):
        words = split_words(text)
        if len(words) != 1:
            raise HTTPException(422, f"words[{i}]: give one word (letters or digits), got {text!r}")
        try:
            found = encoder.neighbors(words[0], body.k)
        except KeyError:
            raise HTTPException(422, f"words[{i}]: {words[0]!r} is not in the model's vocabulary of "
                                     f"{len(encoder.words)} words")
        data.append({"word": words[0], "in_vocabulary": words[0] in encoder.index,
                     "neighbors": [{"word": w, "score": s} for w, s in found]})
    return {"object": "list", "model": body.model, "k": body.k, "data": data}
