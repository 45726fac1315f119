"""Dataset registration and resolution (built-ins here; uploads and URIs build on the same rows)."""
from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.data import ArrayDataset, DatasetUnavailable, load_source
from core.data.builtin import NAMES as BUILTIN_NAMES
from jobs.ids import new_id
from jobs.tables import Dataset


class DatasetNotFound(LookupError):
    pass


def describe(train: ArrayDataset, test: ArrayDataset) -> dict:
    mean, std = train.channel_stats()
    return {"n_items": len(train), "n_test": len(test), "n_classes": max(train.num_classes, test.num_classes),
            "content_hash": train.content_hash(),
            "stats": {"mean": mean, "std": std, "channels": train.channels, "image_size": train.image_size,
                      "labelled": bool((train.labels >= 0).any())}}


def register_builtin(session: Session, project_id: str, name: str) -> Dataset:
    """Register (or return the already registered) built-in dataset; scanned synchronously (small)."""
    if name not in BUILTIN_NAMES:
        raise DatasetUnavailable(f"unknown built-in dataset {name!r}; choose one of {', '.join(BUILTIN_NAMES)}")
    existing = session.scalar(select(Dataset).where(Dataset.project_id == project_id, Dataset.uri == f"builtin://{name}"))
    if existing is not None and existing.state == "ready":
        return existing
    train, test = load_source(f"builtin://{name}")  # raises DatasetUnavailable with the install hint
    dataset = existing or Dataset(id=new_id("ds"), project_id=project_id, name=name, uri=f"builtin://{name}",
                                  format="builtin")
    for key, value in describe(train, test).items():
        setattr(dataset, key, value)
    dataset.state, dataset.error = "ready", None
    session.add(dataset)
    session.flush()
    return dataset


def resolve(session: Session, project_id: str, ref: str) -> Dataset:
    """A dataset id of this project, or a built-in name (registered on first use)."""
    dataset = session.get(Dataset, ref)
    if dataset is not None and dataset.project_id == project_id:
        return dataset
    if ref in BUILTIN_NAMES:
        return register_builtin(session, project_id, ref)
    raise DatasetNotFound(f"dataset {ref!r} not found")


def load(dataset: Dataset) -> tuple[ArrayDataset, ArrayDataset]:
    return load_source(dataset.uri)
