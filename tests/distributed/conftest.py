"""The service fixtures with a short gang timeout and loopback rendezvous, for distributed jobs."""
from __future__ import annotations

import pytest


@pytest.fixture
def service(service):
    return service.model_copy(update={"gang_timeout": 5.0, "advertise_host": "127.0.0.1"})
