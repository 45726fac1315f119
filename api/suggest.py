"""'Did you mean' for a misspelled field: the known field names of the route's body models."""
from __future__ import annotations

import difflib
import typing

from pydantic import BaseModel


def model_fields(annotation, seen: set | None = None) -> set[str]:
    """Every field name of the pydantic models in an annotation (unions, Annotated, lists, nested)."""
    seen = set() if seen is None else seen
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        if annotation in seen:
            return set()
        seen.add(annotation)
        names = set(annotation.model_fields)
        for field in annotation.model_fields.values():
            names |= model_fields(field.annotation, seen)
        return names
    names: set[str] = set()
    for arg in typing.get_args(annotation):
        names |= model_fields(arg, seen)
    return names


def suggest_fields(errors: list[dict], route) -> list[dict]:
    """The errors, an unknown field's message ending with the closest known names."""
    body = getattr(route, "body_field", None)
    if body is None or not any(e["type"] == "extra_forbidden" for e in errors):
        return errors
    known = sorted(model_fields(body.field_info.annotation))
    for error in errors:
        if error["type"] == "extra_forbidden" and error["loc"]:
            close = difflib.get_close_matches(str(error["loc"][-1]), known, n=3, cutoff=0.6)
            if close:
                error["msg"] += f"; did you mean {' or '.join(repr(c) for c in close)}?"
    return errors
