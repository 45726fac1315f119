"""Cooperative stops: a cancel ends a running job within one step with a checkpoint, a queued job
is cancelled at once, and SIGTERM hands the job to another worker without losing a step."""
from __future__ import annotations

from tests.conftest import wait_for
from tests.faults.conftest import FAULT_SPEC, checkpoints_of, events, job_row, last_metric_id, loss_steps_since, wait_progress


def test_cancel_running_job_stops_within_one_step_and_queued_job_at_once(service, api, worker):
    worker()
    running = api.post("/v1/jobs", json=FAULT_SPEC).json()["id"]
    queued = api.post("/v1/jobs", json={**FAULT_SPEC, "seed": 1}).json()["id"]  # the solo worker is busy
    wait_progress(service, running, 0, 5)

    assert api.post(f"/v1/jobs/{queued}/cancel").json()["state"] == "cancelled"
    response = api.post(f"/v1/jobs/{running}/cancel").json()
    asked_at = job_row(service, running).step  # the loop is at most one step further than this
    assert response["state"] == "cancelling"

    done = wait_for(api, running, timeout=120)
    assert done["state"] == "cancelled", done
    stopped = done["result"]["step"]
    assert asked_at <= stopped <= asked_at + 1, (asked_at, stopped)
    last = checkpoints_of(service, running)[-1]
    assert done["result"]["checkpoint"] == last.id and last.step == stopped and "full" in last.parts
    states = [e.data.get("state") for e in events(service, running) if e.kind == "state"]
    assert states[-2:] == ["cancelling", "cancelled"], states
    assert job_row(service, queued).attempt == 0  # never started, even after its message arrived


def test_sigterm_checkpoints_releases_lease_and_another_worker_resumes(service, api, worker):
    first = worker(name="a")
    job_id = api.post("/v1/jobs", json=FAULT_SPEC).json()["id"]
    before = wait_progress(service, job_id, 0, 8)
    first.proc.terminate()  # what `docker stop` or systemd sends
    assert first.proc.wait(90) is not None
    row = job_row(service, job_id)
    assert row.state == "retrying" and row.worker_id is None, (row.state, first.output()[-3000:])
    stopped_at = checkpoints_of(service, job_id)[-1].step
    first_attempt = loss_steps_since(service, job_id, 0)
    assert max(before) <= stopped_at == max(first_attempt)  # the shutdown checkpoint is the last step run

    after = last_metric_id(service, job_id)
    worker(name="b")
    done = wait_for(api, job_id, timeout=120)
    log = [(e.at.isoformat(), e.message) for e in events(service, job_id) if e.kind != "checkpoint"]
    assert done["state"] == "succeeded" and done["attempt"] == 1, log  # a graceful shutdown spends no attempt
    assert loss_steps_since(service, job_id, after)[0] == stopped_at + 1  # no step repeated, none skipped
    assert any(f"resuming at step {stopped_at}" in e.message for e in events(service, job_id))
