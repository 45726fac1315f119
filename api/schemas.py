"""Response models shared by the routers."""
from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field


class Out(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class JobOut(Out):
    id: str
    kind: str
    state: str
    queue: str
    method: str | None
    spec: dict
    recipe: dict | None = None
    attempt: int
    max_attempts: int
    step: int
    total_steps: int
    progress: float = 0.0
    error: str | None
    result: dict
    metrics: dict[str, float] = Field(default_factory=dict)  # a factory: a literal default is deep-copied per row
    compute_seconds: float
    nodes: int = 1
    devices: int = 1
    status: str | None = None  # e.g. "waiting for 1 of 2 nodes"
    warnings: list[str] = Field(default_factory=list)  # e.g. no live worker consumes the job's queue
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


class JobList(BaseModel):
    data: list[JobOut]
    total: int
    limit: int
    offset: int


class DatasetOut(Out):
    id: str
    name: str
    uri: str
    format: str
    state: str
    n_items: int | None
    n_test: int | None
    n_classes: int | None
    content_hash: str | None
    stats: dict
    error: str | None
    created_at: datetime


class CheckpointOut(Out):
    id: str
    job_id: str
    step: int
    final: bool
    method: str
    backbone: str
    dataset_id: str | None
    sha256: str
    bytes: int
    parts: dict
    manifest: dict
    created_at: datetime


class ScoreOut(Out):
    id: int
    checkpoint_id: str | None
    baseline: str | None
    method: str | None
    backbone: str | None
    dataset_id: str
    protocol: str
    metric: str
    value: float
    options: dict
    eval_job_id: str | None
    compute_seconds: float
    created_at: datetime
