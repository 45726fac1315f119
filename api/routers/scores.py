"""Scores: filtered rows and the leaderboard (best per method, score per compute-hour)."""
from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from api.deps import ProjectDep, SessionDep, SettingsDep
from api.schemas import ScoreOut
from jobs import scores

router = APIRouter(tags=["scores"])


@router.get("/scores")
def list_scores(session: SessionDep, settings: SettingsDep, project: ProjectDep, dataset: str | None = None,
                protocol: str | None = None, metric: str | None = None, method: str | None = None, backbone: str | None = None,
                checkpoint: str | None = None, limit: Annotated[int, Query(ge=1, le=1000)] = 100,
                offset: Annotated[int, Query(ge=0, le=10**9)] = 0) -> dict:
    """Score rows (newest first) and the leaderboard: the best value per method (baselines count
    as methods) for each dataset/protocol/metric, with its score per pretraining compute-hour."""
    limit = min(limit, settings.page_size_max)
    dataset = scores.dataset_filter(session, project, dataset)
    rows = scores.query(session, project, dataset=dataset, protocol=protocol, metric=metric, method=method,
                        backbone=backbone, checkpoint=checkpoint, limit=limit, offset=offset)
    board = scores.leaderboard(session, project, dataset=dataset, protocol=protocol, metric=metric, method=method,
                               backbone=backbone)
    return {"data": [ScoreOut.model_validate(r).model_dump(mode="json") for r in rows], "leaderboard": board}
