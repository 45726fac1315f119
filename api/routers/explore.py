"""What the dashboard shows beside the JSON: a dataset's items as PNG thumbnails, and the 2-D map
(t-SNE) of an embed-index job, one point per item, with its label."""
from __future__ import annotations

import io
import threading
from collections import OrderedDict
from typing import Annotated, Literal

import numpy as np
from fastapi import APIRouter, HTTPException, Path, Query, Request
from fastapi.responses import Response
from PIL import Image

from api.concurrency import slots
from api.deps import ProjectDep, SessionDep, SettingsDep
from api.routers.neighbors import index_cache
from core.checkpoint import CorruptCheckpoint
from core.modalities import IMAGE, of_stats
from core.data import DatasetUnavailable
from core.projection import even_sample, project_2d
from jobs import datasets, images
from jobs.storage import store_for
from jobs.tables import Dataset, Job

router = APIRouter(tags=["explore"])
CACHE_SIZE = 4
MAP_POINTS = 5000  # the map of a job is computed once, at most this many points, and sampled per `limit`


class Lru:
    """A tiny thread-safe LRU of computed values."""

    def __init__(self, size: int):
        self.size, self.items, self.lock = size, OrderedDict(), threading.Lock()

    def peek(self, key):
        with self.lock:
            if key in self.items:
                self.items.move_to_end(key)
                return self.items[key]
        return None

    def get(self, key, compute):
        value = self.peek(key)
        if value is not None:
            return value
        value = compute()
        with self.lock:
            self.items[key] = value
            while len(self.items) > self.size:
                self.items.popitem(last=False)
        return value


def app_cache(request: Request, name: str) -> Lru:
    if not hasattr(request.app.state, name):
        setattr(request.app.state, name, Lru(CACHE_SIZE))
    return getattr(request.app.state, name)


def png(image: np.ndarray, scale: int) -> bytes:
    """(C, H, W) uint8 -> PNG bytes, enlarged `scale` times with nearest-neighbour pixels."""
    array = image[0] if image.shape[0] == 1 else image.transpose(1, 2, 0)
    picture = Image.fromarray(np.ascontiguousarray(array))
    if scale > 1:
        picture = picture.resize((picture.width * scale, picture.height * scale), Image.NEAREST)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()


@router.get("/datasets/{dataset_id}/items/{item}", response_class=Response,
            responses={200: {"content": {"image/png": {}}}})
def item_image(dataset_id: str, item: Annotated[int, Path(ge=0, le=2**31)], request: Request,
               session: SessionDep, settings: SettingsDep, project: ProjectDep,
               split: Literal["train", "test"] = "train", scale: Annotated[int, Query(ge=1, le=16)] = 1) -> Response:
    """One item of a dataset split as a PNG (for thumbnails; `scale` enlarges small images)."""
    row = datasets.find(session, project, dataset_id)  # an id or a name
    if row is None:
        raise HTTPException(404, f"dataset {dataset_id!r} not found (neither an id nor a name)")
    if row.state != "ready":
        raise HTTPException(409, f"dataset {dataset_id} is {row.state}; items are shown once it is ready")
    if of_stats(row.stats) != IMAGE:
        raise HTTPException(422, f"dataset {dataset_id} holds {of_stats(row.stats)}, not images: no item pictures")
    try:
        if "prepared" in (row.stats or {}):  # one item read from the prepared arrays, not the whole dataset
            image, count = images.read_item(row, store_for(settings), split, item)
        else:  # a built-in: small, loaded once and kept
            train, test = app_cache(request, "dataset_cache").get(row.id, lambda: images.load(row))
            data = train if split == "train" else test
            image, count = (data.images[item].numpy() if 0 <= item < len(data) else None), len(data)
    except (DatasetUnavailable, FileNotFoundError) as exc:
        raise HTTPException(422, f"dataset {dataset_id} has no images to show: {exc}")
    if image is None:
        raise HTTPException(404, f"item {item} is not in the {split} split (0..{count - 1})")
    return Response(png(image, scale), media_type="image/png", headers={"Cache-Control": "private, max-age=3600"})


@router.get("/indexes/{index_id}/map")
def embedding_map(index_id: str, request: Request, session: SessionDep, settings: SettingsDep, project: ProjectDep,
                  limit: Annotated[int, Query(ge=2, le=MAP_POINTS)] = 2000) -> dict:
    """A t-SNE map of an embed-index job: one point per item (at most `limit`, evenly sampled)
    with its item id and label, for the dashboard's embedding map."""
    job = session.get(Job, index_id)
    if job is None or job.project_id != project or job.kind != "embed-index":
        raise HTTPException(404, f"index {index_id!r} not found (give the id of an embed-index job)")
    if job.state != "succeeded":
        raise HTTPException(409, f"index {index_id} is not ready: its job is {job.state}")
    try:
        index = index_cache(request).get(settings, job)
    except (CorruptCheckpoint, FileNotFoundError) as exc:
        raise HTTPException(410, f"index {index_id} cannot be loaded: {exc}")

    def compute() -> list[dict]:
        chosen = even_sample(len(index["vectors"]), MAP_POINTS)
        coords = project_2d(index["vectors"].float().numpy()[chosen])
        items, labels = index["items"][chosen].tolist(), index["labels"][chosen].tolist()
        return [{"item": int(i), "x": round(float(x), 5), "y": round(float(y), 5), "label": int(label)}
                for i, (x, y), label in zip(items, coords, labels)]

    cache = app_cache(request, "map_cache")
    every = cache.peek(job.id)
    if every is None:  # t-SNE takes CPU-seconds: a few at a time per project, the others 429
        with slots(request, "expensive", "maps or ONNX exports", settings.expensive_total,
                   settings.expensive_per_project).hold(project):
            every = cache.get(job.id, compute)
    points = [every[i] for i in even_sample(len(every), limit)]
    dataset = session.get(Dataset, job.result["dataset"])
    names = datasets.class_names(dataset)
    points = [{**p, "class": names[p["label"]] if 0 <= p["label"] < len(names) else None} for p in points]
    return {"index": job.id, "checkpoint": job.result["checkpoint"], "dataset": job.result["dataset"],
            "dataset_name": dataset.name if dataset else None, "classes": names,
            "split": job.result["split"], "projection": "t-SNE (scikit-learn), cosine", "n_items": job.result.get("n_items"),
            "points": points}
