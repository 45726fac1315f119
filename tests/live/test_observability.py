"""Structured JSON logs with job ids from the API and the worker, and /metrics with HTTP latency
histograms, queue depth and live workers per queue."""
from __future__ import annotations

import json
import re

from tests.conftest import TINY_PRETRAIN


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def test_logs_are_json_lines_with_job_ids(live):
    job_id = live.job["id"]
    with live.http() as http:
        http.get(f"/v1/jobs/{job_id}")
    api = json_lines(live.api_log.read_text())
    assert api and all(r["service"] == "api" and {"ts", "level", "logger", "message"} <= set(r) for r in api)
    requests = [r for r in api if r["logger"] == "api.requests" and r.get("job_id") == job_id]
    assert any(r["method"] == "GET" and r["path"] == f"/v1/jobs/{job_id}" and r["status"] == 200
               and r["duration_ms"] >= 0 for r in requests)
    worker = json_lines(live.worker.output())
    mine = [r for r in worker if r.get("job_id") == job_id]
    assert any("claimed" in r["message"] for r in mine) and any("succeeded" in r["message"] for r in mine)
    assert all(r["service"] == "worker" for r in mine)
    # everything the worker logs after start-up is JSON (Celery's banner is not a log record)
    stray = [line for line in live.worker.output().splitlines() if line.startswith(("[20", "WARNING", "INFO", "ERROR"))]
    assert not stray, stray[:5]


def test_metrics_histograms_queue_depth_and_live_workers(live):
    with live.http() as http:
        for _ in range(3):
            assert http.get(f"/v1/jobs/{live.job['id']}").status_code == 200
        assert http.get("/v1/jobs/job_nope").status_code == 404
        # a job on a queue no worker consumes waits there: queue depth 1 on that queue
        waiting = http.post("/v1/jobs", json={**TINY_PRETRAIN, "dataset": live.dataset["id"], "queue": "idle"}).json()
        text = http.get("/metrics").text
        http.post(f"/v1/jobs/{waiting['id']}/cancel")
    route = 'method="GET",route="/v1/jobs/{job_id}",status="200"'
    count = int(re.search(rf"darkmatter_http_request_duration_seconds_count{{{re.escape(route)}}} (\d+)", text).group(1))
    assert count >= 3
    buckets = [int(v) for v in re.findall(rf'_bucket{{{re.escape(route)},le="[^"]+"}} (\d+)', text)]
    assert buckets == sorted(buckets) and buckets[-1] == count  # cumulative, +Inf holds every request
    assert 'route="/v1/jobs/{job_id}",status="404"' in text
    assert 'darkmatter_queue_depth{queue="idle"} 1' in text
    for queue in ("default", "gpu", "cpu"):  # the live worker consumes the configured queues
        assert f'darkmatter_live_workers{{queue="{queue}"}} 1' in text
    assert 'darkmatter_live_workers{queue="idle"} 0' in text
