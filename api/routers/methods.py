"""The registered methods and backbones."""
from __future__ import annotations

from fastapi import APIRouter

from core.backbones import backbone_names
from jobs.specs import available_methods

router = APIRouter(tags=["methods"])


@router.get("/methods")
def methods() -> dict:
    return {"data": available_methods(), "backbones": backbone_names()}
