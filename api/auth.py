"""API-key authentication: keys are stored as sha256 hashes and bound to one project. Successes
and failures are reported to the rate limiter (only verified keys get a bucket of their own)."""
from __future__ import annotations

from fastapi import HTTPException, Request
from sqlalchemy import select
from sqlalchemy.orm import Session

from jobs.keys import hash_key
from jobs.tables import ApiKey


def presented_key(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip()
    return request.headers.get("x-api-key")


def project_for_request(request: Request, session: Session) -> str:
    key = presented_key(request)
    callers = getattr(request.app.state, "callers", None)
    if not key:
        raise HTTPException(401, "an API key is required (Authorization: Bearer <key>)",
                            headers={"WWW-Authenticate": "Bearer"})
    row = session.scalar(select(ApiKey).where(ApiKey.key_hash == hash_key(key)))
    if row is None or row.disabled:
        if callers is not None:
            callers.mark_failed(key, request.client.host if request.client else "unknown")
        raise HTTPException(401, "invalid or disabled API key", headers={"WWW-Authenticate": "Bearer"})
    if callers is not None:
        callers.mark_verified(key)
    request.state.api_key_id = row.id
    return row.project_id
