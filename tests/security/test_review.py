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


def test_registering_a_dataset_never_holds_the_event_loop_on_the_broker(authed, monkeypatch):
    """The async dataset route sent its scan message on the event loop: a slow or unreachable
    broker froze every request (/healthz included) for as long as the send took."""
    import threading
    import time

    import api.routers.datasets as route

    api, key = authed
    sent = threading.Event()

    def slow_broker(settings, dataset_id):
        time.sleep(1.5)
        sent.set()
        return True

    monkeypatch.setattr(route, "enqueue_scan", slow_broker)
    import io

    import numpy as np

    npz = io.BytesIO()
    np.savez(npz, x=np.zeros((4, 1, 8, 8), np.uint8), y=np.zeros(4, np.int64))
    api.get("/healthz")  # warm: the first request of a client sets up its connection
    answers = []
    poster = threading.Thread(target=lambda: answers.append(
        api.post("/v1/datasets", files={"file": ("a.npz", npz.getvalue())}, headers=key)))
    poster.start()
    time.sleep(0.5)  # the registration is in, the send under way
    started = time.perf_counter()
    assert api.get("/healthz").status_code == 200
    healthz = time.perf_counter() - started
    poster.join()
    assert sent.is_set() and answers[0].status_code == 201, answers[0].text
    assert healthz < 0.5, f"/healthz took {healthz:.2f} s while a scan message was being sent"


def test_a_use_key_deletes_its_projects_objects_and_only_those(authed, sqlite_service):
    """Scopes as documented: a use key submits, cancels and deletes its project's datasets,
    checkpoints and jobs (what it may make it may clean up); keys are the admin's."""
    from tests.conftest import TINY_PRETRAIN

    api, admin = authed
    use = bearer(api.post("/v1/keys", json={"name": "ci"}, headers=admin).json()["key"])
    with session_scope(sqlite_service.database_url) as session:
        _, other = create_key(session, "b", "owner")
    job = api.post("/v1/jobs", json=TINY_PRETRAIN, headers=use).json()["id"]
    assert api.post(f"/v1/jobs/{job}/cancel", headers=use).status_code == 200
    assert api.delete(f"/v1/jobs/{job}", headers=bearer(other)).status_code == 404
    deleted = api.delete(f"/v1/jobs/{job}", headers=use)
    assert deleted.status_code == 200 and deleted.json()["deleted"] is True, deleted.text
    assert api.get(f"/v1/jobs/{job}", headers=admin).status_code == 404
    assert api.delete(f"/v1/keys/{api.get('/v1/keys', headers=admin).json()['data'][0]['id']}",
                      headers=use).status_code == 403


def test_a_refused_text_submit_does_not_redescribe_the_builtin_corpus(authed, monkeypatch):
    """A submit naming a built-in text dataset described it (training its tokenizers: ~13 CPU-s)
    in the API thread, and a refused submit rolled the registration back, so the issue's
    reproductions (an oversized mlm model, a random-init evaluate with depth 4000) still held an
    API thread ~12 s each, every time. Now described once per process."""
    from core.data.text import TextDataset
    from jobs import text

    api, key = authed
    loads = []

    def tiny_corpus(name):
        loads.append(name)
        docs = [f"document {i} about {w}" for i, w in enumerate(["cats", "dogs", "birds", "fish"] * 10)]
        return TextDataset(docs[:36], [0] * 36, ["all"]), TextDataset(docs[36:], [0] * 4, ["all"])

    monkeypatch.setattr(text, "load_text", tiny_corpus)
    text._described_text.cache_clear()
    try:
        for spec in ({"method": "mlm", "dataset": "wordnet-glosses",
                      "backbone_options": {"dim": 8192, "depth": 64, "heads": 64}},
                     {"kind": "evaluate", "checkpoint": "random-init", "dataset": "wordnet-glosses",
                      "backbone": "text_small", "backbone_options": {"depth": 4000}}) * 2:
            answer = api.post("/v1/jobs", json=spec, headers=key)
            assert answer.status_code == 422, answer.text
    finally:
        text._described_text.cache_clear()  # the real corpus for the tests that follow
    assert loads == ["wordnet-glosses"]
