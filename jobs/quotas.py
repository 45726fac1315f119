"""Per-project quotas: datasets (count), stored bytes, active (queued or running) jobs.

A check and the insert it admits run in one transaction that first takes the project's row lock
(`lock_project`), so two requests racing for the last unit of a quota cannot both pass."""
from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from jobs.lifecycle import STATES, TERMINAL
from jobs.settings import Settings
from jobs.tables import Checkpoint, Dataset, Job, Project

ACTIVE_STATES = tuple(state for state in STATES if state not in TERMINAL)  # queued, running, cancelling, retrying
BUILTIN_FORMAT = "builtin"  # built-in datasets are shared files: they count against no quota


class QuotaExceeded(Exception):
    """A request that would take the project past a quota. `status` is 429 for active jobs (they
    end by themselves: retry later) and 403 for what only a deletion frees (datasets, bytes)."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Quotas:
    datasets: int = 0  # 0: unlimited, for each of the three
    stored_bytes: int = 0
    active_jobs: int = 0

    @classmethod
    def from_settings(cls, settings: Settings) -> "Quotas":
        return cls(settings.quota_datasets, settings.quota_stored_bytes, settings.quota_active_jobs)


def lock_project(session: Session, project_id: str) -> None:
    """Hold the project's row until the transaction ends. A no-op UPDATE of a column that is in no
    index: on PostgreSQL a FOR NO KEY UPDATE row lock (rows being inserted that refer to the project
    take only KEY SHARE, so they never deadlock with it); on SQLite the database's write lock. Take
    it before reading the counts: they are then read after any racing request has committed."""
    session.execute(update(Project).where(Project.id == project_id).values(created_at=Project.created_at)
                    .execution_options(synchronize_session=False))


def counted_datasets(session: Session, project_id: str) -> int:
    return session.scalar(select(func.count()).select_from(Dataset).where(
        Dataset.project_id == project_id, Dataset.format != BUILTIN_FORMAT)) or 0


def active_jobs(session: Session, project_id: str) -> int:
    return session.scalar(select(func.count()).select_from(Job).where(
        Job.project_id == project_id, Job.state.in_(ACTIVE_STATES))) or 0


def stored_bytes(session: Session, project_id: str) -> dict[str, int]:
    """Bytes the project keeps in the artifact store: uploaded dataset files and their prepared
    arrays, checkpoint files, embed-index files (derived caches and ONNX exports aside)."""
    dataset_bytes = session.scalar(select(func.sum(
        func.coalesce(Dataset.stats["source_bytes"].as_float(), 0) +
        func.coalesce(Dataset.stats["prepared_bytes"].as_float(), 0))).where(Dataset.project_id == project_id))
    checkpoint_bytes = session.scalar(select(func.sum(Checkpoint.bytes)).where(Checkpoint.project_id == project_id))
    index_bytes = session.scalar(select(func.sum(Job.result["bytes"].as_float())).where(
        Job.project_id == project_id, Job.kind == "embed-index", Job.state == "succeeded"))
    return {"datasets": int(dataset_bytes or 0), "checkpoints": int(checkpoint_bytes or 0),
            "indexes": int(index_bytes or 0)}


def usage(session: Session, settings: Settings, project_id: str) -> dict:
    """Each quota with what the project uses of it (limit 0: unlimited)."""
    quotas = Quotas.from_settings(settings)
    parts = stored_bytes(session, project_id)
    return {"project_id": project_id,
            "datasets": {"used": counted_datasets(session, project_id), "limit": quotas.datasets},
            "stored_bytes": {"used": sum(parts.values()), "limit": quotas.stored_bytes, "by_kind": parts},
            "active_jobs": {"used": active_jobs(session, project_id), "limit": quotas.active_jobs}}


def _bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n} B" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def check_stored_bytes(session: Session, quotas: Quotas, project_id: str, adding: int = 0) -> None:
    if not quotas.stored_bytes:
        return
    used = sum(stored_bytes(session, project_id).values())
    if used + adding > quotas.stored_bytes or (not adding and used >= quotas.stored_bytes):
        what = f"; this request adds {_bytes(adding)}" if adding else ""
        raise QuotaExceeded(403, f"stored-bytes quota exceeded: the project stores {_bytes(used)} ({used:,} bytes) "
                                 f"of its {_bytes(quotas.stored_bytes)} ({quotas.stored_bytes:,} bytes, "
                                 f"DARKMATTER_QUOTA_STORED_BYTES){what}; delete datasets, checkpoints or jobs first")


def admit_dataset(session: Session, quotas: Quotas, project_id: str, adding_bytes: int = 0) -> None:
    """Lock the project, then raise QuotaExceeded unless one more dataset of `adding_bytes` fits."""
    lock_project(session, project_id)
    check_dataset(session, quotas, project_id, adding_bytes)


def check_dataset(session: Session, quotas: Quotas, project_id: str, adding_bytes: int = 0) -> None:
    """admit_dataset's check without the lock: an early answer, before an upload is read."""
    if quotas.datasets:
        used = counted_datasets(session, project_id)
        if used >= quotas.datasets:
            raise QuotaExceeded(403, f"datasets quota exceeded: the project has {used} of its {quotas.datasets} "
                                     "datasets (DARKMATTER_QUOTA_DATASETS); delete one first")
    check_stored_bytes(session, quotas, project_id, adding_bytes)


def admit_job(session: Session, quotas: Quotas, project_id: str, kind: str) -> None:
    """Lock the project, then raise QuotaExceeded unless one more active job fits (and, for jobs that
    store files, pretrain and embed-index, the project is under its stored-bytes quota)."""
    lock_project(session, project_id)
    if quotas.active_jobs:
        used = active_jobs(session, project_id)
        if used >= quotas.active_jobs:
            raise QuotaExceeded(429, f"active-jobs quota exceeded: the project has {used} of its {quotas.active_jobs} "
                                     "queued or running jobs (DARKMATTER_QUOTA_ACTIVE_JOBS); retry when one ends, "
                                     "or cancel one")
    if kind in ("pretrain", "embed-index"):
        check_stored_bytes(session, quotas, project_id)
