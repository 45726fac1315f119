"""Bad evaluation, index and neighbor requests are clear 4xx answers."""
from __future__ import annotations

import pytest

SQLITE = pytest.mark.parametrize("service", ["sqlite"], indirect=True)


@SQLITE
@pytest.mark.parametrize("spec,status,words", [
    ({"checkpoint": "ckpt_nope"}, 404, "checkpoint 'ckpt_nope' not found"),
    ({"checkpoints": ["raw-pixels", "ckpt_nope"]}, 404, "not found"),
    ({}, 422, "give checkpoint or checkpoints"),
    ({"checkpoint": "raw-pixels", "protocols": [{"protocol": "magic"}]}, 422, "unknown protocol"),
    ({"checkpoint": "raw-pixels", "protocols": [{"protocol": "knn", "options": {"kk": 1}}]}, 422, "unknown options"),
    ({"checkpoint": "raw-pixels", "dataset": "nope"}, 404, "not found"),
])
def test_bad_evaluate_specs(api, spec, status, words):
    response = api.post("/v1/jobs", json={"kind": "evaluate", "dataset": "digits", **spec})
    assert response.status_code == status, response.text
    assert words in str(response.json()["detail"])


@SQLITE
def test_bad_pretrain_evaluations_and_index_specs(api):
    bad = api.post("/v1/jobs", json={"method": "simclr", "dataset": "digits", "evaluations": [{"protocol": "nope"}]})
    assert bad.status_code == 422 and "unknown protocol" in str(bad.json()["detail"])
    bad = api.post("/v1/jobs", json={"kind": "embed-index", "checkpoint": "ckpt_nope", "dataset": "digits"})
    assert bad.status_code == 404
    bad = api.post("/v1/jobs", json={"kind": "embed-index", "checkpoint": "x", "dataset": "digits", "dtype": "int8"})
    assert bad.status_code == 422


@SQLITE
def test_bad_neighbor_requests(api):
    missing = api.post("/v1/neighbors", json={"index": "job_nope", "query": [0]})
    assert missing.status_code == 404 and "not found" in missing.json()["detail"]
    pretrain = api.post("/v1/jobs", json={"method": "simclr", "dataset": "digits"}).json()
    wrong_kind = api.post("/v1/neighbors", json={"index": pretrain["id"], "query": [0]})
    assert wrong_kind.status_code == 404
    assert api.post("/v1/neighbors", json={"index": pretrain["id"], "query": []}).status_code == 422
    assert api.post("/v1/neighbors", json={"index": pretrain["id"], "query": [0], "k": 0}).status_code == 422
    assert api.get("/v1/checkpoints/ckpt_nope/scores").status_code == 404


@SQLITE
def test_index_not_ready_is_a_conflict(api, service):
    from jobs.db import session_scope
    from jobs.tables import Job

    with session_scope(service.database_url) as session:  # an index job no worker has run yet
        session.add(Job(id="job_index1", project_id="prj_default", kind="embed-index", spec={}, queue="default",
                        state="queued", result={}))
    response = api.post("/v1/neighbors", json={"index": "job_index1", "query": [0]})
    assert response.status_code == 409 and "queued" in response.json()["detail"]


@SQLITE
def test_checkpoint_of_other_channel_count_is_rejected(api, service):
    from jobs.db import session_scope
    from jobs.tables import Checkpoint, Job

    with session_scope(service.database_url) as session:
        session.add(Job(id="job_rgb", project_id="prj_default", kind="pretrain", spec={}, queue="default",
                        state="succeeded", result={}))
        session.flush()
        session.add(Checkpoint(id="ckpt_rgb", project_id="prj_default", job_id="job_rgb", step=1, final=True,
                               method="simclr", backbone="small_cnn", sha256="0" * 64, bytes=1, parts={},
                               manifest={"input_size": [3, 32, 32]}))
    for spec in ({"kind": "evaluate", "checkpoint": "ckpt_rgb", "dataset": "digits"},
                 {"kind": "embed-index", "checkpoint": "ckpt_rgb", "dataset": "digits"}):
        response = api.post("/v1/jobs", json=spec)
        assert response.status_code == 422 and "3-channel" in response.json()["detail"], response.text
