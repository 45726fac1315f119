"""Checkpoint retention per job (keep the newest N, the best and the final) and garbage
collection of artifact files that no checkpoint row refers to (left by a crash between writing
a file and registering it, or by a prune whose file deletion was interrupted)."""
from __future__ import annotations

import logging
import time

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from jobs.storage import ArtifactStore
from jobs.tables import Checkpoint, Score

log = logging.getLogger(__name__)
PREFIX = "checkpoints"


def _loss(row: Checkpoint) -> float:
    value = (row.manifest or {}).get("metrics", {}).get("loss")
    return float(value) if isinstance(value, (int, float)) else float("inf")


def to_keep(rows: list[Checkpoint], keep_last: int, scored: set[str]) -> set[str]:
    """Ids to keep among one job's checkpoints: the newest `keep_last`, the final ones, the one
    with the lowest recorded training loss, and any that scores refer to."""
    newest = sorted(rows, key=lambda r: r.step, reverse=True)  # (created_at mixes naive and aware on SQLite)
    keep = {r.id for r in newest[:keep_last]}
    keep |= {r.id for r in rows if r.final or r.id in scored}
    finite = [r for r in rows if _loss(r) != float("inf")]
    if finite:
        keep.add(min(finite, key=lambda r: (_loss(r), -r.step)).id)
    return keep


def prune(session: Session, job_id: str, keep_last: int) -> list[str]:
    """Delete the rows of the job's checkpoints that retention drops; returns their ids, whose
    files the caller deletes after the transaction commits (see `delete_files`)."""
    rows = session.scalars(select(Checkpoint).where(Checkpoint.job_id == job_id)).all()
    ids = [r.id for r in rows]
    scored = set(session.scalars(select(Score.checkpoint_id).where(Score.checkpoint_id.in_(ids)))) if ids else set()
    drop = [r.id for r in rows if r.id not in to_keep(rows, keep_last, scored)]
    if drop:
        session.execute(delete(Checkpoint).where(Checkpoint.id.in_(drop)))
    return drop


def delete_files(store: ArtifactStore, checkpoint_ids: list[str]) -> None:
    for checkpoint_id in checkpoint_ids:
        try:
            store.delete(f"{PREFIX}/{checkpoint_id}")
        except OSError:  # the garbage collector gets it later
            log.warning("could not delete files of checkpoint %s", checkpoint_id, exc_info=True)


def collect_garbage(session: Session, store: ArtifactStore, min_age_seconds: float, now: float | None = None) -> list[str]:
    """Delete checkpoint folders with no registered row that are older than `min_age_seconds`
    (younger ones may be a checkpoint being written right now). Returns the deleted ids."""
    now = time.time() if now is None else now
    entries = {name: mtime for name, mtime in store.list_dir(PREFIX) if now - mtime >= min_age_seconds}
    if not entries:
        return []
    known = set(session.scalars(select(Checkpoint.id).where(Checkpoint.id.in_(list(entries)))))
    orphans = sorted(set(entries) - known)
    delete_files(store, orphans)
    if orphans:
        log.info("garbage-collected %d unregistered checkpoint folders", len(orphans))
    return orphans
