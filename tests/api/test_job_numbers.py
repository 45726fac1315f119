"""The numbers a job page shows: a running job's time instead of "compute 0 s", a cancelled job's
step where its checkpoint is (not its last logged step), results rounded for reading."""
from __future__ import annotations

from typer.testing import CliRunner

from client.cli import app
from jobs import lifecycle
from jobs.db import session_scope
from jobs.tables import DEFAULT_PROJECT, Job


def add_job(settings, job_id: str) -> None:
    with session_scope(settings.database_url) as session:
        session.add(Job(id=job_id, project_id=DEFAULT_PROJECT, kind="pretrain", state="queued", spec={"dataset": "x"},
                        queue="default", method="simclr", step=0, total_steps=300, result={}))
        session.flush()
        assert lifecycle.claim(session, job_id, "w1")


class FakeClient:
    """The CLI's client over the in-process app."""

    def __init__(self, http):
        self.http = http

    def job(self, job_id):
        return self.http.get(f"/v1/jobs/{job_id}").json()

    def job_events(self, job_id, after=0):
        return self.http.get(f"/v1/jobs/{job_id}/events").json()


def show(api, monkeypatch, job_id: str) -> str:
    monkeypatch.setattr("client.cli.jobs.connect", lambda url, key: FakeClient(api))
    result = CliRunner().invoke(app, ["jobs", "show", job_id], env={"COLUMNS": "160"})
    assert result.exit_code == 0, result.output
    return result.output


def test_a_running_job_shows_its_running_time_not_compute_0_s(service, api, monkeypatch):
    add_job(service, "job_run")
    with session_scope(service.database_url) as session:
        session.get(Job, "job_run").step = 120  # the loop logged step 120
    out = show(api, monkeypatch, "job_run")
    assert "running for" in out and "compute 0.0 s" not in out


def test_a_cancelled_job_ends_at_its_checkpoints_step_with_rounded_results(service, api, monkeypatch):
    add_job(service, "job_cxl")
    with session_scope(service.database_url) as session:
        session.get(Job, "job_cxl").step = 230  # the last logged step
        assert lifecycle.finish(session, "job_cxl", "w1", lifecycle.CANCELLED, error="cancelled",
                                result={"step": 239, "checkpoint": "ckpt_x", "final_loss": 0.6499999761581421},
                                from_states=(lifecycle.RUNNING,))
    job = api.get("/v1/jobs/job_cxl").json()
    assert job["step"] == 239 and job["result"]["checkpoint"] == "ckpt_x"
    out = show(api, monkeypatch, "job_cxl")
    assert "239/300" in out and "result final_loss" in out and "0.65" in out and "0.64999" not in out
    assert "compute" in out and "running for" not in out
