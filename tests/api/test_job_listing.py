"""GET /v1/jobs: offset pages in the listing's order (newest first, id breaking ties), filters and
totals, read off the listing index."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import insert, text

from api.totals import Totals
from jobs.db import get_engine, session_scope
from jobs.tables import DEFAULT_PROJECT, Job, Metric

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


def add_jobs(settings, specs: list[tuple[str, int, str, str]]) -> None:
    """(id, minutes after T0, state, method) rows of the default project, each with two metrics."""
    with session_scope(settings.database_url) as session:
        session.execute(insert(Job), [{
            "id": job_id, "project_id": DEFAULT_PROJECT, "kind": "pretrain", "state": state, "spec": {"n": i},
            "queue": "default", "method": method, "step": 5, "total_steps": 10, "result": {},
            "created_at": T0 + timedelta(minutes=minutes)} for i, (job_id, minutes, state, method) in enumerate(specs)])
        session.execute(insert(Metric), [{"job_id": job_id, "step": step, "name": "loss", "value": float(step),
                                          "at": T0} for job_id, *_ in specs for step in (1, 2)])


JOBS = [  # several share a creation time: the id orders those
    ("job_c", 3, "succeeded", "simclr"), ("job_a", 3, "failed", "byol"), ("job_b", 3, "succeeded", "simclr"),
    ("job_e", 1, "queued", "simclr"), ("job_d", 5, "succeeded", "byol"), ("job_f", 0, "succeeded", "simclr"),
    ("job_g", 5, "running", "simclr"),
]
NEWEST_FIRST = ["job_d", "job_g", "job_a", "job_b", "job_c", "job_e", "job_f"]


def pages(api, **params) -> tuple[list[str], set[int]]:
    ids, totals, offset = [], set(), 0
    while True:
        page = api.get("/v1/jobs", params={**params, "limit": 3, "offset": offset}).json()
        totals.add(page["total"])
        if not page["data"]:
            return ids, totals
        assert page["offset"] == offset and page["limit"] == 3
        ids += [job["id"] for job in page["data"]]
        offset += 3


def test_offset_pages_list_every_job_once_newest_first(api, service):
    add_jobs(service, JOBS)
    ids, totals = pages(api)
    assert ids == NEWEST_FIRST and totals == {len(JOBS)}


@pytest.mark.parametrize("filters", [{"state": "succeeded"}, {"method": "byol"},
                                     {"state": "succeeded", "method": "simclr"}, {"kind": "pretrain"},
                                     {"method": "nope"}])
def test_filtered_pages_keep_the_order_and_count_only_matches(api, service, filters):
    add_jobs(service, JOBS)
    rows = {job_id: {"state": state, "method": method, "kind": "pretrain"} for job_id, _, state, method in JOBS}
    expected = [j for j in NEWEST_FIRST if all(rows[j][k] == v for k, v in filters.items())]
    ids, totals = pages(api, **filters)
    assert ids == expected and totals == {len(expected)}


def test_an_unknown_state_is_refused_with_the_valid_ones(api, service):
    answer = api.get("/v1/jobs", params={"state": "runing"})
    assert answer.status_code == 422 and "running" in answer.text


def test_listed_jobs_read_like_the_single_job_view(api, service):
    add_jobs(service, JOBS)
    listed = {job["id"]: job for job in api.get("/v1/jobs", params={"limit": 50}).json()["data"]}
    assert set(listed) == set(NEWEST_FIRST)
    for job_id in NEWEST_FIRST:
        single = api.get(f"/v1/jobs/{job_id}").json()
        assert listed[job_id]["metrics"] == single["metrics"] == {"loss": 2.0}  # the newest value
        assert listed[job_id]["progress"] == single["progress"] == 0.5
        for field in ("state", "method", "spec", "created_at", "attempt", "result"):
            assert listed[job_id][field] == single[field], field
        assert listed[job_id]["warnings"] == [] and listed[job_id]["status"] is None


def test_the_listing_index_is_in_the_listing_order(service):
    with get_engine(service.database_url).connect() as conn:
        if service.database_url.startswith("sqlite"):
            ddl = conn.execute(text("select sql from sqlite_master where name = 'ix_jobs_project_created'")).scalar()
            plan = str(conn.execute(text(
                "EXPLAIN QUERY PLAN SELECT id FROM jobs WHERE project_id = 'p' ORDER BY created_at DESC, id "
                "LIMIT 50 OFFSET 100")).all())
            assert "ix_jobs_project_created" in plan and "TEMP B-TREE" not in plan, plan  # no sort
        else:
            ddl = conn.execute(text("select indexdef from pg_indexes "
                                    "where indexname = 'ix_jobs_project_created'")).scalar()
    assert ddl is not None and "(project_id, created_at DESC, id)" in ddl, ddl


def test_a_large_total_is_reused_briefly_and_recounted_after_a_submit(service):
    from fastapi.testclient import TestClient

    from api.app import create_app
    from tests.conftest import TINY_PRETRAIN

    app = create_app(service)
    app.state.job_totals = Totals(3600, exact_below=2)  # every total of 2 or more is "large" here
    add_jobs(service, JOBS[:3])
    with TestClient(app) as api:
        assert api.get("/v1/jobs").json()["total"] == 3
        add_jobs(service, JOBS[3:4])  # written behind this process's back (a worker, another API process)
        assert api.get("/v1/jobs").json()["total"] == 3  # up to DARKMATTER_JOB_TOTAL_SECONDS old
        assert len(api.get("/v1/jobs").json()["data"]) == 4  # the page itself is always fresh
        assert api.post("/v1/jobs", json=TINY_PRETRAIN).status_code == 201
        assert api.get("/v1/jobs").json()["total"] == 5


def test_totals_count_small_ones_every_time_and_large_ones_once_a_window(monkeypatch):
    import api.totals

    counted = []

    def count(n):
        def run():
            counted.append(n)
            return n
        return run

    now = [100.0]
    monkeypatch.setattr(api.totals.time, "monotonic", lambda: now[0])
    totals = Totals(seconds=1.0, exact_below=10)
    assert totals.get("p", (None,), count(3)) == 3 and totals.get("p", (None,), count(4)) == 4  # small: exact
    assert totals.get("p", (None,), count(50)) == 50
    assert totals.get("p", (None,), count(51)) == 50  # within the window
    assert totals.get("p", ("running",), count(12)) == 12  # other filters: counted on their own
    now[0] += 1.5
    assert totals.get("p", (None,), count(52)) == 52  # the window has passed
    totals.forget("p")
    assert totals.get("p", (None,), count(53)) == 53
    assert Totals(seconds=0).get("p", (), count(10**6)) == 10**6 and counted == [3, 4, 50, 12, 52, 53, 10**6]


def test_one_request_recounts_an_expired_total_while_the_others_answer_the_last_one(monkeypatch):
    import api.totals

    now = [100.0]
    monkeypatch.setattr(api.totals.time, "monotonic", lambda: now[0])
    totals = Totals(seconds=1.0, exact_below=10)
    assert totals.get("p", (), lambda: 50) == 50
    now[0] += 2
    seen = []

    def slow_count():  # a second listing arrives while the first is recounting
        seen.append(totals.get("p", (), lambda: pytest.fail("counted twice at once")))
        return 60

    assert totals.get("p", (), slow_count) == 60 and seen == [50]
    assert totals.get("p", (), lambda: pytest.fail("counted again within the window")) == 60


def test_a_count_begun_before_a_submit_is_not_kept(monkeypatch):
    totals = Totals(seconds=3600, exact_below=10)

    def count_then_submit():
        totals.forget("p")  # a submit lands while the count runs: the count may have missed it
        return 50

    assert totals.get("p", (), count_then_submit) == 50
    assert totals.get("p", (), lambda: 51) == 51
