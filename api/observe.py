"""Request observability: a structured log line per request (with the job id when the path names
one) and HTTP latency histograms by method, route template and status, for /metrics."""
from __future__ import annotations

import logging
import re
import threading
import time

from jobs.logs import job_scope

log = logging.getLogger("api.requests")
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
JOB_IN_PATH = re.compile(r"^/v1/jobs/([A-Za-z0-9_-]+)")
QUIET = {"/healthz", "/readyz", "/metrics"}  # probes and scrapes: measured, not logged


class HttpMetrics:
    def __init__(self):
        self.lock = threading.Lock()
        self.series: dict[tuple[str, str, str], list] = {}  # key -> [bucket counts..., sum, count]

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        key = (method, route, str(status))
        with self.lock:
            row = self.series.setdefault(key, [0] * len(BUCKETS) + [0.0, 0])
            for i, bound in enumerate(BUCKETS):
                if seconds <= bound:
                    row[i] += 1
            row[-2] += seconds
            row[-1] += 1

    def render(self) -> list[str]:
        name = "darkmatter_http_request_duration_seconds"
        lines = [f"# HELP {name} HTTP request latency (to the end of the response body).",
                 f"# TYPE {name} histogram"]
        with self.lock:
            items = sorted(self.series.items())
            for (method, route, status), row in items:
                labels = f'method="{method}",route="{route}",status="{status}"'
                for bound, count in zip(BUCKETS, row):
                    lines.append(f'{name}_bucket{{{labels},le="{bound}"}} {count}')
                lines.append(f'{name}_bucket{{{labels},le="+Inf"}} {row[-1]}')
                lines.append(f"{name}_sum{{{labels}}} {row[-2]:.6f}")
                lines.append(f"{name}_count{{{labels}}} {row[-1]}")
        return lines


def template(scope) -> str:
    """The route's template (`/v1/jobs/{job_id}`): the path with its parameters named, so the
    metric's label set stays small. Paths no route matched share one label."""
    if scope.get("route") is None:
        return "unmatched"
    if scope.get("path", "").startswith("/static/"):
        return "/static"
    segments = scope["path"].split("/")
    for name, value in (scope.get("path_params") or {}).items():
        segments = [f"{{{name}}}" if segment == str(value) else segment for segment in segments]
    return "/".join(segments)


class Observe:
    """Pure ASGI middleware (so streamed responses are timed to their last byte)."""

    def __init__(self, app, metrics: HttpMetrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started, status = time.perf_counter(), [500]

        async def tracked(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        path = scope.get("path", "")
        match = JOB_IN_PATH.match(path)
        try:
            if match:
                with job_scope(match.group(1)):
                    await self.app(scope, receive, tracked)
            else:
                await self.app(scope, receive, tracked)
        finally:
            seconds = time.perf_counter() - started
            route = template(scope)
            self.metrics.observe(scope["method"], route, status[0], seconds)
            if path not in QUIET and not path.startswith("/static/"):
                extra = {"method": scope["method"], "path": path, "status": status[0],
                         "duration_ms": round(seconds * 1000, 2)}
                if match:
                    extra["job_id"] = match.group(1)
                log.info("%s %s %s", scope["method"], path, status[0], extra=extra)
