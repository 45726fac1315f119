"""Defects found reviewing the issue-20 work at the seams of its parts: each test answers what an
attacker's request now gets."""
from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from jobs.db import session_scope
from jobs.keys import create_key


def bearer(key: str) -> dict:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
def authed(sqlite_service):
    """An in-process app with auth on, and project A's admin key."""
    settings = sqlite_service.model_copy(update={"auth": True})
    with TestClient(create_app(settings)) as client:  # its start-up migrates the database
        with session_scope(settings.database_url) as session:
            _, key = create_key(session, "a", "owner")
        yield client, bearer(key)


def test_a_json_body_typed_Multipart_is_not_parsed_as_json(authed):
    """The size cap and the guard read the type case-insensitively and let a multipart body through
    unread (the upload counts its own bytes); the route used to read it case-sensitively, took it
    for JSON and read the whole body into memory with no cap, no nesting or type check."""
    api, key = authed
    answer = api.post("/v1/datasets", content=b'{"builtin": "digits"}',
                      headers={**key, "Content-Type": "Multipart/form-data; boundary=x"})
    assert answer.status_code == 422, answer.text
    assert api.get("/v1/datasets", headers=key).json()["data"] == []
