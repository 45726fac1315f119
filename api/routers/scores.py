"""Scores: filtered rows and the leaderboard (mean ± std over seeds per configuration, ranked by each
metric's direction)."""
from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from sqlalchemy import select

from api.deps import ProjectDep, SessionDep, SettingsDep
from api.schemas import ScoreOut
from jobs import scores
from jobs.tables import Dataset

router = APIRouter(tags=["scores"])


@router.get("/scores")
def list_scores(session: SessionDep, settings: SettingsDep, project: ProjectDep, dataset: str | None = None,
                protocol: str | None = None, metric: str | None = None, method: str | None = None, backbone: str | None = None,
                checkpoint: str | None = None, limit: Annotated[int, Query(ge=1, le=1000)] = 100,
                offset: Annotated[int, Query(ge=0, le=10**9)] = 0) -> dict:
    """Score rows (newest first) and the leaderboard: one row per configuration (method or baseline,
    backbone, recipe, protocol options) and dataset/protocol/metric, with the mean and std over its
    seeds, `n` values from `runs` training runs, ranked by the metric's direction (`direction`:
    higher | lower | null, `kind`: score | loss | count | statistic); score per pretraining
    compute-hour for scores only. `metrics` describes every metric on the board."""
    limit = min(limit, settings.page_size_max)
    dataset = scores.dataset_filter(session, project, dataset)
    rows = scores.query(session, project, dataset=dataset, protocol=protocol, metric=metric, method=method,
                        backbone=backbone, checkpoint=checkpoint, limit=limit, offset=offset)
    board = scores.leaderboard(session, project, dataset=dataset, protocol=protocol, metric=metric, method=method,
                               backbone=backbone)
    names = dict(session.execute(select(Dataset.id, Dataset.name).where(
        Dataset.id.in_({row["dataset"] for row in board}))).all()) if board else {}
    for row in board:
        row["dataset_name"] = names.get(row["dataset"])
    described = {row["metric"]: scores.metric_info(row["metric"]).to_dict() for row in board}
    return {"data": [ScoreOut.model_validate(r).model_dump(mode="json") for r in rows], "leaderboard": board,
            "metrics": described}
