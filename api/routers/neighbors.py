"""Nearest items of an embed-index job's dataset split for a query: exact cosine search, or the
index's HNSW graph when it was built with search 'hnsw'."""
from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Union

import torch
from fastapi import APIRouter, HTTPException, Request
from pydantic import BaseModel, ConfigDict, Field, StrictInt

from api.deps import ProjectDep, SessionDep, SettingsDep
from api.routers.embeddings import batcher, embed_any, load_encoder
from core.checkpoint import CorruptCheckpoint, load_tree
from core.index import exact_search, hnsw_search, load_hnsw
from jobs import datasets
from jobs.storage import store_for
from jobs.tables import Dataset, Job

router = APIRouter(tags=["neighbors"])
INDEX_CACHE_SIZE = 4


class NeighborsRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    index: str = Field(description="the id of a succeeded embed-index job")
    query: list[Union[StrictInt, str, list]] = Field(
        min_length=1, description="item ids of the indexed split, or inputs as /v1/embeddings takes them: base64 "
                                  "images or pixel arrays for an image index, free text for a text index")
    k: int = Field(10, ge=1, le=1000)
    exact: bool = Field(False, description="exact cosine search even when the index has an HNSW graph")


class IndexCache:
    def __init__(self, size: int):
        self.size, self.items, self.lock = size, OrderedDict(), threading.Lock()

    def get(self, settings, job: Job) -> dict:
        with self.lock:
            if job.id in self.items:
                self.items.move_to_end(job.id)
                return self.items[job.id]
        store = store_for(settings)
        tree, _ = load_tree(store.local_path(job.result["key"]), expected_sha256=job.result["sha256"])
        if "hnsw" in tree:  # the graph deserialised once per cached index, not per request
            tree["hnsw_index"] = load_hnsw(tree["hnsw"])
        with self.lock:
            self.items[job.id] = tree
            while len(self.items) > self.size:
                self.items.popitem(last=False)
        return tree

    def drop(self, job_id: str) -> None:
        with self.lock:
            self.items.pop(job_id, None)


def index_cache(request: Request) -> IndexCache:
    if not hasattr(request.app.state, "index_cache"):
        request.app.state.index_cache = IndexCache(INDEX_CACHE_SIZE)
    return request.app.state.index_cache


@router.post("/neighbors")
def neighbors(body: NeighborsRequest, request: Request, session: SessionDep, settings: SettingsDep,
              project: ProjectDep) -> dict:
    if len(body.query) > settings.max_embedding_inputs:
        raise HTTPException(413, f"{len(body.query)} queries; at most {settings.max_embedding_inputs} per request")
    job = session.get(Job, body.index)
    if job is None or job.project_id != project or job.kind != "embed-index":
        raise HTTPException(404, f"index {body.index!r} not found (give the id of an embed-index job)")
    if job.state != "succeeded":
        raise HTTPException(409, f"index {body.index} is not ready: its job is {job.state}")
    try:
        index = index_cache(request).get(settings, job)
    except (CorruptCheckpoint, FileNotFoundError) as exc:
        raise HTTPException(410, f"index {body.index} cannot be loaded: {exc}")
    dataset = session.get(Dataset, job.result["dataset"])  # before load_encoder closes the session
    dataset_name, names = (dataset.name if dataset else None), datasets.class_names(dataset)
    vectors, items, labels = index["vectors"].float(), index["items"], index["labels"]
    queries: list[torch.Tensor | None] = [None] * len(body.query)
    inputs = [(i, q) for i, q in enumerate(body.query) if not isinstance(q, int)]
    for i, q in enumerate(body.query):
        if isinstance(q, int):
            if not 0 <= q < len(vectors):
                raise HTTPException(422, f"query[{i}]: item {q} is not in the index (0..{len(vectors) - 1})")
            queries[i] = vectors[q]
    if inputs:
        encoder, manifest = load_encoder(request, settings, session, project, job.result["checkpoint"])
        embedded, _ = embed_any([q for _, q in inputs], encoder, manifest, settings,
                                batching=(batcher(request), job.result["checkpoint"]))
        for (i, _), vector in zip(inputs, embedded):
            queries[i] = vector
    q = torch.stack(queries).float()
    if "hnsw" in index and not body.exact:
        search = "hnsw"
        scores, idx = hnsw_search(index["hnsw_index"], q, body.k)
    else:
        search = "exact-cosine"
        scores, idx = exact_search(vectors, q, body.k)
    k = scores.shape[1]
    data = [{"query": i, "neighbors": [{"item": int(items[j]), "score": round(float(s), 6), "label": int(labels[j]),
                                        "class": names[labels[j]] if 0 <= labels[j] < len(names) else None}
                                       for s, j in zip(row_scores, row_idx) if j >= 0]}
            for i, (row_scores, row_idx) in enumerate(zip(scores.tolist(), idx.tolist()))]
    return {"object": "list", "index": job.id, "checkpoint": job.result["checkpoint"],
            "dataset": job.result["dataset"], "dataset_name": dataset_name, "split": job.result["split"],
            "search": search, "k": k,
            "data": data}
