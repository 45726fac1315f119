"""Who is calling: an API key (stored as a sha256 hash, bound to one project, with a scope) when
auth is on, the launch token when the server runs without auth. Checked by api.guard before a
/v1 route reads its body; successes and failures are reported to the rate limiter."""
from __future__ import annotations

import hmac
from dataclasses import dataclass

from sqlalchemy import select

from jobs.db import session_scope
from jobs.keys import hash_key
from jobs.settings import Settings
from jobs.tables import DEFAULT_PROJECT, ApiKey


@dataclass(frozen=True)
class Caller:
    project: str
    key_id: str | None  # None: auth off (the launch token or an in-process app)
    scope: str  # "admin" manages keys; "use" submits and reads


class Refused(Exception):
    def __init__(self, status: int, detail: str, headers: dict[str, str] | None = None):
        super().__init__(detail)
        self.status, self.detail, self.headers = status, detail, headers or {}


BEARER = {"WWW-Authenticate": "Bearer"}


def launch_caller(settings: Settings, presented: str | None) -> Caller:
    """Auth off: the default project, behind the launch token when the server has one."""
    if settings.launch_token and not (presented and hmac.compare_digest(presented.encode("utf-8", "surrogateescape"),
                                                                        settings.launch_token.encode())):
        raise Refused(401, "this server needs its launch token (Authorization: Bearer <token>): it is in "
                           "$DARKMATTER_HOME/launch-token on the server's machine, and in the dashboard URL the "
                           "server printed", BEARER)
    return Caller(DEFAULT_PROJECT, None, "admin")


def key_caller(database_url: str, presented: str | None) -> Caller | None:
    """The caller a key belongs to; None for an unknown or disabled key (a short session of its own,
    so no pooled connection stays checked out for a long request)."""
    with session_scope(database_url) as session:
        row = session.scalar(select(ApiKey).where(ApiKey.key_hash == hash_key(presented)))
        if row is None or row.disabled:
            return None
        return Caller(row.project_id, row.id, row.scope)


def key_is_active(database_url: str, key_id: str) -> bool:
    """Whether a key still exists and is enabled (open event streams re-check it)."""
    with session_scope(database_url) as session:
        row = session.get(ApiKey, key_id)
        return row is not None and not row.disabled
