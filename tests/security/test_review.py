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


def test_an_upload_cannot_hold_its_body_in_memory_as_form_fields(authed):
    """Each form field was capped (16 KiB) but not their number: an upload's whole allowance
    (2 GiB, times the upload slots) could sit in the API's memory as fields. Fields and part
    headers now hold at most FORM_OVERHEAD (256 KiB) in all."""
    api, key = authed
    fields = b"".join(b'--x\r\nContent-Disposition: form-data; name="f%d"\r\n\r\n' % i + b"v" * 15_000 + b"\r\n"
                      for i in range(40))
    body = fields + (b'--x\r\nContent-Disposition: form-data; name="file"; filename="a.npz"\r\n\r\n'
                     b"PK\r\n--x--\r\n")
    answer = api.post("/v1/datasets", content=body, headers={**key, "Content-Type": "multipart/form-data; boundary=x"})
    assert answer.status_code == 422, answer.text
    assert "fields and part headers are larger than" in answer.json()["detail"]
    assert api.get("/v1/datasets", headers=key).json()["data"] == []
