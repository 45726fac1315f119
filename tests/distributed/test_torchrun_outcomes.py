"""`devices: 2` on one machine: torchrun reports any failed group as exit code 1, so each rank's
own outcome reaches the worker: a transient error retries the job, a bug fails it with the failing
rank's traceback, a finished job whose final write failed is recorded, not rerun."""
from __future__ import annotations

import os
import sys

import pytest

from jobs import lifecycle
from jobs.db import session_scope
from jobs.tables import Job
from tests.conftest import ROOT, TINY_PRETRAIN
from tests.faults.conftest import events
from workers import launch, runner

pytestmark = pytest.mark.parametrize("service", ["sqlite"], indirect=True)


def run_faulty(service, api, mode: str) -> tuple[str, Job]:
    job_id = api.post("/v1/jobs", json={**TINY_PRETRAIN, "devices": 2, "batch_size": 32}).json()["id"]
    with session_scope(service.database_url) as session:
        assert lifecycle.claim(session, job_id, "w1")
    files = launch.RunFiles(service, job_id)
    env = {**runner.child_env(service, files), "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    cmd = [sys.executable, "-m", "workers.torchrun", "--standalone", "--nnodes", "1", "--nproc-per-node", "2",
           "--max-restarts", "0", "-m", "tests.distributed.faulty_rank", mode, job_id, "w1"]
    try:
        outcome = runner.supervise(service, job_id, "w1", launch.start(cmd, env), files)
    finally:
        files.remove()
    with session_scope(service.database_url) as session:
        job = session.get(Job, job_id)
        session.expunge(job)
    return outcome, job


def test_a_rank_with_a_transient_error_makes_the_job_retrying(service, api):
    outcome, job = run_faulty(service, api, "transient")
    assert outcome == job.state == "retrying", (outcome, job.error)
    messages = [e.message for e in events(service, job.id)]
    assert any("a transient infrastructure error" in m for m in messages), messages  # not "exited with code 1"


def test_a_rank_with_a_bug_fails_the_job_with_its_traceback(service, api):
    outcome, job = run_faulty(service, api, "bug")
    assert job.state == "failed" and job.error == "rank 1: ValueError: a bad value on rank 1", job.error
    tracebacks = [e.message for e in events(service, job.id) if "Traceback" in e.message]
    assert tracebacks and tracebacks[0].startswith("rank 1: ") and "a bad value on rank 1" in tracebacks[0]


def test_a_finished_job_whose_final_write_failed_is_recorded_not_rerun(service, api):
    outcome, job = run_faulty(service, api, "unrecorded")
    assert outcome == job.state == "succeeded" and job.attempt == 1 and job.result == {"step": 8}, (outcome, job.error)


def test_submit_refuses_more_devices_than_any_live_worker_owns(service, api):
    from jobs import fleet

    with session_scope(service.database_url) as session:
        fleet.beat(session, "gpu-box:1", "gpu-box", ["default"], ["0", "1"])
    response = api.post("/v1/jobs", json={**TINY_PRETRAIN, "devices": 4, "batch_size": 32})
    assert response.status_code == 422 and "own at most 2 GPUs" in response.json()["detail"], response.json()
    assert api.post("/v1/jobs", json={**TINY_PRETRAIN, "devices": 2, "batch_size": 32}).status_code == 201


def test_a_worker_with_too_few_gpus_passes_the_job_on(service, api, monkeypatch):
    job_id = api.post("/v1/jobs", json={**TINY_PRETRAIN, "devices": 2, "batch_size": 32}).json()["id"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    assert runner.run_job(job_id, service.model_copy(update={"heartbeat_interval": 0.0})) == "passed-on"
    with session_scope(service.database_url) as session:
        assert session.get(Job, job_id).state == "queued"
    assert any("owns 1 GPUs; the job needs 2" in e.message for e in events(service, job_id))
