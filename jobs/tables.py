"""The database schema (migrated by Alembic in migrations/)."""
from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import JSON, BigInteger, Boolean, DateTime, Float, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Base(DeclarativeBase):
    type_annotation_map = {dict: JSON, list: JSON, datetime: DateTime(timezone=True)}


DEFAULT_PROJECT = "prj_default"


class Project(Base):
    __tablename__ = "projects"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ApiKey(Base):
    __tablename__ = "api_keys"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"), index=True)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    name: Mapped[str] = mapped_column(String(200), default="")
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    # "admin" manages the project's keys; "use" submits and reads. Keys made before scopes are admin.
    scope: Mapped[str] = mapped_column(String(16), default="admin", server_default="admin")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Dataset(Base):
    __tablename__ = "datasets"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    uri: Mapped[str] = mapped_column(Text)
    format: Mapped[str] = mapped_column(String(40))
    state: Mapped[str] = mapped_column(String(20), default="pending")  # pending | ready | invalid
    n_items: Mapped[int | None] = mapped_column(Integer)
    n_test: Mapped[int | None] = mapped_column(Integer)
    n_classes: Mapped[int | None] = mapped_column(Integer)
    content_hash: Mapped[str | None] = mapped_column(String(64))
    stats: Mapped[dict] = mapped_column(default=dict)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Job(Base):
    __tablename__ = "jobs"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"), index=True)
    kind: Mapped[str] = mapped_column(String(20))  # pretrain | evaluate | embed-index
    state: Mapped[str] = mapped_column(String(20), default="queued", index=True)
    spec: Mapped[dict] = mapped_column()
    recipe: Mapped[dict | None] = mapped_column(nullable=True)  # pretrain: every value the run uses
    queue: Mapped[str] = mapped_column(String(64))
    method: Mapped[str | None] = mapped_column(String(64), index=True)
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer, default=3)
    worker_id: Mapped[str | None] = mapped_column(String(200))
    heartbeat_at: Mapped[datetime | None] = mapped_column()
    step: Mapped[int] = mapped_column(Integer, default=0)
    total_steps: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text)
    result: Mapped[dict] = mapped_column(default=dict)
    compute_seconds: Mapped[float] = mapped_column(Float, default=0.0)
    nodes: Mapped[int] = mapped_column(Integer, default=1, server_default="1")  # machines, each a worker
    devices: Mapped[int] = mapped_column(Integer, default=1, server_default="1")  # processes per machine
    idempotency_key: Mapped[str | None] = mapped_column(String(200))
    request_hash: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    started_at: Mapped[datetime | None] = mapped_column()
    finished_at: Mapped[datetime | None] = mapped_column()
    __table_args__ = (Index("ix_jobs_project_idempotency", "project_id", "idempotency_key", unique=True),)


# The listing's order (a project's jobs newest first, id breaking ties), read off the index: no sort.
Index("ix_jobs_project_created", Job.project_id, Job.created_at.desc(), Job.id)
# Quotas: a project's active jobs, and its succeeded embed-index jobs (their files), read off the index.
Index("ix_jobs_project_state_kind", Job.project_id, Job.state, Job.kind)


class WorkerRow(Base):
    """A live worker process: its queues and devices, renewed every sweep interval."""
    __tablename__ = "workers"
    id: Mapped[str] = mapped_column(String(200), primary_key=True)
    hostname: Mapped[str] = mapped_column(String(255))
    queues: Mapped[list] = mapped_column()
    devices: Mapped[list] = mapped_column()  # the device ids it owns ([] : CPU only)
    heartbeat_at: Mapped[datetime] = mapped_column(index=True)
    started_at: Mapped[datetime] = mapped_column(default=utcnow)


class JobEvent(Base):
    __tablename__ = "job_events"
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    at: Mapped[datetime] = mapped_column(default=utcnow)
    kind: Mapped[str] = mapped_column(String(40))  # state | log | collapse | checkpoint
    message: Mapped[str] = mapped_column(Text, default="")
    data: Mapped[dict] = mapped_column(default=dict)


class Metric(Base):
    __tablename__ = "metrics"
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    step: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(64))
    value: Mapped[float] = mapped_column(Float)
    at: Mapped[datetime] = mapped_column(default=utcnow)
    __table_args__ = (Index("ix_metrics_job_name_step", "job_id", "name", "step"),)


class Checkpoint(Base):
    __tablename__ = "checkpoints"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"), index=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id"), index=True)
    step: Mapped[int] = mapped_column(Integer)
    final: Mapped[bool] = mapped_column(Boolean, default=False)
    method: Mapped[str] = mapped_column(String(64))
    backbone: Mapped[str] = mapped_column(String(64))
    dataset_id: Mapped[str | None] = mapped_column(String(40))
    sha256: Mapped[str] = mapped_column(String(64))  # of the backbone part
    bytes: Mapped[int] = mapped_column(BigInteger)
    parts: Mapped[dict] = mapped_column()  # part -> {key, sha256, bytes}
    manifest: Mapped[dict] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


# Quotas: a project's checkpoint bytes summed off the index, without reading the rows' manifests.
Index("ix_checkpoints_project_bytes", Checkpoint.project_id, Checkpoint.bytes)


class Score(Base):
    __tablename__ = "scores"
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"), index=True)
    checkpoint_id: Mapped[str | None] = mapped_column(ForeignKey("checkpoints.id"), index=True)
    baseline: Mapped[str | None] = mapped_column(String(40))  # raw-pixels | random-init
    method: Mapped[str | None] = mapped_column(String(64))
    backbone: Mapped[str | None] = mapped_column(String(64))
    dataset_id: Mapped[str] = mapped_column(String(40), index=True)
    protocol: Mapped[str] = mapped_column(String(40))
    metric: Mapped[str] = mapped_column(String(40))
    value: Mapped[float] = mapped_column(Float)
    options: Mapped[dict] = mapped_column(default=dict)
    eval_job_id: Mapped[str | None] = mapped_column(ForeignKey("jobs.id"))
    compute_seconds: Mapped[float] = mapped_column(Float, default=0.0)  # pretraining cost
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    __table_args__ = (Index("ix_scores_dataset_protocol_metric", "dataset_id", "protocol", "metric"),)
