"""A hung training process (SIGSTOP: what a stalled read or a CUDA hang looks like from outside)
is noticed by the worker's progress watchdog; the job is retried, and a cancel ends it cancelled.
Attempts run out into `failed` with the reason."""
from __future__ import annotations

import os
import signal

import pytest

from tests.conftest import wait_for
from tests.faults.conftest import FAULT_SPEC, events, training_child, wait_progress

SQLITE_ONLY = pytest.mark.parametrize("service", ["sqlite"], indirect=True)  # Postgres: test_fencing, test_outages


@pytest.fixture
def service(service):
    return service.model_copy(update={"watchdog_seconds": 10.0})


@SQLITE_ONLY
def test_a_stopped_child_is_killed_and_the_job_retried(service, api, worker):
    w = worker()
    job_id = api.post("/v1/jobs", json={**FAULT_SPEC, "steps": 60}).json()["id"]
    wait_progress(service, job_id, 0, 12)
    child = training_child(w)
    os.kill(child, signal.SIGSTOP)
    done = wait_for(api, job_id, timeout=240)
    assert done["state"] == "succeeded" and done["attempt"] >= 2, done
    assert any("made no progress" in e.message and "watchdog" in e.message for e in events(service, job_id))
    assert any("resuming at step" in e.message for e in events(service, job_id))


@SQLITE_ONLY
def test_a_cancel_on_a_hung_job_ends_cancelled(service, api, worker):
    w = worker()
    job_id = api.post("/v1/jobs", json={**FAULT_SPEC, "steps": 200}).json()["id"]
    wait_progress(service, job_id, 0, 5)
    os.kill(training_child(w), signal.SIGSTOP)
    # The child may stop inside its write transaction, locking SQLite until the watchdog kills it
    # (about 10 s). The cancel waits for the lock; the worker may give the job back and claim it
    # again first (attempt 2), and the cancel then ends that attempt.
    assert api.post(f"/v1/jobs/{job_id}/cancel").json()["state"] in ("cancelling", "cancelled")
    done = wait_for(api, job_id, timeout=120)
    assert done["state"] == "cancelled" and done["attempt"] <= 2, done


@SQLITE_ONLY
def test_attempts_run_out_into_failed_with_the_reason(service, api, worker):
    w = worker()
    job_id = api.post("/v1/jobs", json={**FAULT_SPEC, "steps": 200, "max_attempts": 1}).json()["id"]
    wait_progress(service, job_id, 0, 3)
    os.kill(training_child(w), signal.SIGKILL)
    done = wait_for(api, job_id, timeout=120)
    assert done["state"] == "failed" and done["attempt"] == 1, done
    assert "exited with code -9" in done["error"] and "after 1 attempts" in done["error"], done["error"]
