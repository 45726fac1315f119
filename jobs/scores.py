"""Scores: one row per (checkpoint or baseline, dataset, protocol, metric)."""
from __future__ import annotations

import hashlib
import json
import statistics

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from core.evaluate.metrics import better, metric_info
from jobs.tables import Checkpoint, Dataset, Job, Score


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
    """One row per configuration (method or baseline, backbone, recipe, protocol options) and
    dataset/protocol/metric: the mean and standard deviation over its seeds (one value per training
    run and evaluation seed, the latest when a run was evaluated twice), ranked within each
    dataset/protocol/metric by the metric's direction. Taking the best of N test scores would rank
    by luck; the probes' own hyper-parameters are chosen on held-out train data (core/evaluate)."""
    who = func.coalesce(Score.method, Score.baseline)
    q = (select(Score, Job.id.label("run_id"), Job.recipe).outerjoin(Checkpoint, Checkpoint.id == Score.checkpoint_id)
         .outerjoin(Job, Job.id == Checkpoint.job_id).where(Score.project_id == project_id))
    for column, value in ((Score.dataset_id, dataset), (Score.protocol, protocol), (Score.metric, metric),
                          (Score.backbone, backbone), (who, method)):
        if value is not None:
            q = q.where(column == value)
    latest: dict[tuple, tuple] = {}
    for score, run_id, recipe in session.execute(q.order_by(Score.id)):
        options = dict(score.options or {})
        seed = options.pop("seed", None)
        run = run_id or f"{score.baseline}:{score.eval_job_id}"
        config = (score.method or score.baseline, score.backbone, recipe_key(recipe),
                  json.dumps(options, sort_keys=True), score.dataset_id, score.protocol, score.metric)
        latest[config, run, seed] = (score, run, recipe)  # later rows replace earlier ones
    groups: dict[tuple, list] = {}
    for (config, _, _), entry in latest.items():
        groups.setdefault(config, []).append(entry)
    board = [board_row(config, entries) for config, entries in groups.items()]
    return rank(board)


def recipe_key(recipe: dict | None) -> str | None:
    """The resolved recipe less the run's seed: runs that differ only by seed share it."""
    if not recipe:
        return None
    same = {**recipe, "train": {k: v for k, v in (recipe.get("train") or {}).items() if k != "seed"}}
    return hashlib.sha256(json.dumps(same, sort_keys=True, default=str).encode()).hexdigest()[:12]


def board_row(config: tuple, entries: list) -> dict:
    who, backbone, recipe_id, options, dataset_id, protocol, metric = config
    info = metric_info(metric)
    values = [score.value for score, _, _ in entries]
    mean = statistics.fmean(values)
    runs = {run: score.compute_seconds or 0.0 for score, run, _ in entries}
    hours = statistics.fmean(runs.values()) / 3600
    best = entries[0][0]
    for score, _, _ in entries[1:]:
        if better(info.direction, score.value, best.value):
            best = score
    recipe = next((r for _, _, r in entries if r), None)
    return {"method": who, "backbone": backbone, "recipe": (recipe or {}).get("scale"), "recipe_id": recipe_id,
            "options": json.loads(options), "dataset": dataset_id, "protocol": protocol, "metric": metric,
            "direction": info.direction, "kind": info.kind, "mean": mean,
            "std": statistics.stdev(values) if len(values) > 1 else None, "n": len(values), "runs": len(runs),
            "checkpoint": best.checkpoint_id, "compute_seconds": statistics.fmean(runs.values()),
            "score_per_compute_hour": mean / hours if hours and info.kind == "score" else None}


def rank(board: list[dict]) -> list[dict]:
    """Rows grouped by dataset/protocol/metric, best mean first (rank 1); unranked metrics keep rank None."""
    def order(row):
        sign = -1 if row["direction"] == "higher" else 1
        return row["dataset"], row["protocol"], row["metric"], sign * row["mean"] if row["direction"] else 0.0
    board.sort(key=order)
    previous, place = None, 0
    for row in board:
        group = (row["dataset"], row["protocol"], row["metric"])
        place = place + 1 if group == previous else 1
        previous = group
        row["rank"] = place if row["direction"] else None
    return board
