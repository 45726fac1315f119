"""The row of a built-in dataset, whatever its modality: registered once per project from the
description its modality's module computes (once per process)."""
from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import select
from sqlalchemy.orm import Session

from jobs.ids import new_id
from jobs.tables import Dataset


def register_builtin(session: Session, project_id: str, name: str, describe: Callable[[str], dict]) -> Dataset:
    """Register (or return the already registered) built-in dataset `name`; `describe(name)` gives
    its row fields and raises DatasetUnavailable with the install hint when it cannot be loaded."""
    existing = session.scalar(select(Dataset).where(Dataset.project_id == project_id, Dataset.uri == f"builtin://{name}"))
    if existing is not None and existing.state == "ready":
        return existing
    facts = describe(name)
    dataset = existing or Dataset(id=new_id("ds"), project_id=project_id, name=name, uri=f"builtin://{name}",
                                  format="builtin")
    for key, value in facts.items():
        setattr(dataset, key, value)
    dataset.state, dataset.error = "ready", None
    session.add(dataset)
    session.flush()
    return dataset
