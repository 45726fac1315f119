"""The registered methods and backbones."""
from __future__ import annotations

from fastapi import APIRouter, HTTPException

from core.backbones import backbone_names
from jobs.specs import available_methods, method_detail

router = APIRouter(tags=["methods"])


@router.get("/methods")
def methods() -> dict:
    return {"data": available_methods(), "backbones": backbone_names()}


@router.get("/methods/{name}")
def method(name: str) -> dict:
    """One method with its recipes (one per image scale), each value with its source."""
    try:
        return method_detail(name)
    except ValueError as exc:
        raise HTTPException(404, str(exc)) from exc
