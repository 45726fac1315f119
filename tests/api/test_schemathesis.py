"""Property-based requests generated from the OpenAPI schema (valid and invalid ones) never get a
5xx: bad input is always a 4xx with a JSON message."""
from __future__ import annotations

import logging

import pytest

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis.errors import Unsatisfiable  # noqa: E402

from api.app import create_app  # noqa: E402

EXAMPLES_PER_MODE = 90  # 19 operations, two modes where an invalid request exists: over 2,000 requests in all


def test_generated_requests_never_get_a_server_error(sqlite_service):
    app = create_app(sqlite_service.model_copy(update={"rate_limit_per_second": 0.0}))
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    sent, errors = [0], []
    for result in schema.get_all_operations():
        operation = result.ok()
        for mode in (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE):
            @settings(max_examples=EXAMPLES_PER_MODE, deadline=None, database=None, derandomize=True,
                      suppress_health_check=list(HealthCheck))
            @given(operation.as_strategy(mode))
            def check(case):
                response = case.call()
                sent[0] += 1
                if response.status_code >= 500:
                    errors.append(f"{case.method} {case.formatted_path} -> {response.status_code}: "
                                  f"{case.query} {str(case.body)[:200]} {response.text[:200]}")

            try:
                check()
            except Unsatisfiable:  # no invalid request exists for an operation without inputs
                assert mode == schemathesis.GenerationMode.NEGATIVE, operation.label
    logging.getLogger(__name__).info("schemathesis: %d generated requests, %d server errors", sent[0], len(errors))
    assert not errors, "\n".join(errors[:20])
    assert sent[0] >= 2000, sent[0]
