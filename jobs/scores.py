"""Scores: one row per (checkpoint or baseline, dataset, protocol, metric)."""
from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from jobs.tables import Dataset, Score


def dataset_filter(session: Session, project_id: str, ref: str | None) -> str | None:
    """A dataset id as given, or the id of this project's dataset with that name (e.g. 'digits')."""
    if ref is None:
        return None
    row = session.get(Dataset, ref)
    if row is not None and row.project_id == project_id:
        return ref
    named = session.scalar(select(Dataset.id).where(Dataset.project_id == project_id, Dataset.name == ref)
                           .order_by(Dataset.created_at.desc()).limit(1))
    return named or ref


def record(session: Session, *, project_id: str, dataset_id: str, protocol: str, values: dict[str, float],
           checkpoint_id: str | None = None, baseline: str | None = None, method: str | None = None,
           backbone: str | None = None, eval_job_id: str | None = None, compute_seconds: float = 0.0,
           options: dict | None = None) -> list[Score]:
    rows = [Score(project_id=project_id, checkpoint_id=checkpoint_id, baseline=baseline, method=method,
                  backbone=backbone, dataset_id=dataset_id, protocol=protocol, metric=metric, value=float(value),
                  options=options or {}, eval_job_id=eval_job_id, compute_seconds=compute_seconds)
            for metric, value in values.items()]
    session.add_all(rows)
    session.flush()
    return rows


def query(session: Session, project_id: str, *, dataset: str | None = None, protocol: str | None = None,
          metric: str | None = None, method: str | None = None, backbone: str | None = None,
          checkpoint: str | None = None, limit: int = 100, offset: int = 0) -> list[Score]:
    q = select(Score).where(Score.project_id == project_id)
    for column, value in ((Score.dataset_id, dataset), (Score.protocol, protocol), (Score.metric, metric),
                          (Score.method, method), (Score.backbone, backbone), (Score.checkpoint_id, checkpoint)):
        if value is not None:
            q = q.where(column == value)
    return list(session.scalars(q.order_by(Score.id.desc()).limit(limit).offset(offset)))


def leaderboard(session: Session, project_id: str, *, dataset: str | None = None, protocol: str | None = None,
                metric: str | None = None, method: str | None = None, backbone: str | None = None) -> list[dict]:
    """Best value per method (baselines count as methods), with score per compute-hour."""
    who = func.coalesce(Score.method, Score.baseline)
    q = select(who.label("method"), Score.dataset_id, Score.protocol, Score.metric, func.max(Score.value).label("best"),
               func.count().label("n")).where(Score.project_id == project_id)
    for column, value in ((Score.dataset_id, dataset), (Score.protocol, protocol), (Score.metric, metric),
                          (Score.backbone, backbone), (who, method)):
        if value is not None:
            q = q.where(column == value)
    q = q.group_by(who, Score.dataset_id, Score.protocol, Score.metric).order_by(func.max(Score.value).desc())
    board = []
    for row in session.execute(q):
        best_q = select(Score).where(Score.project_id == project_id, who == row.method,
                                     Score.dataset_id == row.dataset_id, Score.protocol == row.protocol,
                                     Score.metric == row.metric, Score.value == row.best)
        if backbone is not None:
            best_q = best_q.where(Score.backbone == backbone)
        best = session.scalar(best_q.order_by(Score.id).limit(1))
        hours = (best.compute_seconds or 0) / 3600
        board.append({"method": row.method, "dataset": row.dataset_id, "protocol": row.protocol, "metric": row.metric,
                      "best": row.best, "runs": row.n, "checkpoint": best.checkpoint_id, "backbone": best.backbone,
                      "compute_seconds": best.compute_seconds, "score_per_compute_hour": row.best / hours if hours else None})
    return board
