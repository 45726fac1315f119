"""DELETE routes' shared steps: the rows in one transaction, then the files, then the loaded copies
this API process keeps (models for embeddings, indexes for neighbours)."""
from __future__ import annotations

from typing import Callable

from fastapi import HTTPException, Request
from sqlalchemy.orm import Session

from jobs import deletion
from jobs.settings import Settings
from jobs.storage import store_for


def delete_now(request: Request, session: Session, settings: Settings,
               delete: Callable[[], deletion.Removed]) -> dict:
    """Run `delete` (a jobs.deletion function) and commit; 404 / 409 / 403 as it refuses."""
    try:
        removed = delete()
        session.commit()
    except deletion.NotFound as exc:
        raise HTTPException(404, str(exc))
    except deletion.InUse as exc:
        raise HTTPException(409, str(exc))
    except deletion.Shared as exc:
        raise HTTPException(403, str(exc))
    deletion.remove_files(store_for(settings), settings, removed)
    models = getattr(request.app.state, "model_cache", None)
    indexes = getattr(request.app.state, "index_cache", None)
    for checkpoint_id in removed.checkpoints:
        if models is not None:
            models.drop(checkpoint_id)
    if removed.kind == "job" and indexes is not None:
        indexes.drop(removed.id)
    return removed.answer()
