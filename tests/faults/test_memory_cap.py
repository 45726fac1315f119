"""A training child past DARKMATTER_CHILD_MEMORY_BYTES (RSS of it and its ranks) is killed by its
worker and the job fails at once with the reason, instead of being retried max_attempts times."""
from __future__ import annotations

import pytest

from tests.conftest import wait_for
from tests.faults.conftest import FAULT_SPEC

SQLITE_ONLY = pytest.mark.parametrize("service", ["sqlite"], indirect=True)


@pytest.fixture
def service(service):
    return service.model_copy(update={"child_memory_bytes": 64 * 1024**2})  # below what torch alone takes


@SQLITE_ONLY
def test_a_child_over_its_memory_cap_fails_the_job_without_retries(service, api, worker):
    worker()
    job_id = api.post("/v1/jobs", json={**FAULT_SPEC, "steps": 200}).json()["id"]
    done = wait_for(api, job_id, timeout=120)
    assert done["state"] == "failed" and done["attempt"] == 1, done  # FAULT_SPEC allows 6 attempts
    assert "DARKMATTER_CHILD_MEMORY_BYTES" in done["error"] and "not retried" in done["error"], done["error"]
