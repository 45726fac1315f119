"""A waiting job whose message died with a killed worker is rung again, once, by the sweeper."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

from jobs import lifecycle
from jobs.db import session_scope
from jobs.ids import new_id
from jobs.tables import DEFAULT_PROJECT, Job


def test_lost_doorbell_is_rung_again_once_per_interval(service):
    now = datetime.now(timezone.utc)
    with session_scope(service.database_url) as session:
        for state, age in (("queued", 600), ("retrying", 600), ("queued", 5), ("running", 600)):
            session.add(Job(id=new_id("job"), project_id=DEFAULT_PROJECT, kind="pretrain", spec={}, queue="gpu",
                            state=state, result={}, created_at=now - timedelta(seconds=age)))
    with session_scope(service.database_url) as session:
        due = lifecycle.doorbells_due(session, 300, now=now)
    assert len(due) == 2 and {queue for _, queue in due} == {"gpu"}
    with session_scope(service.database_url) as session:
        states = {session.get(Job, job_id).state for job_id, _ in due}
        assert states == {"queued", "retrying"}
        assert lifecycle.doorbells_due(session, 300, now=now) == []  # another sweeper finds nothing to ring
        later = lifecycle.doorbells_due(session, 300, now=now + timedelta(seconds=301))
        assert len(later) == 3  # the two again, and the young one now due too
