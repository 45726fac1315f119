"""The FastAPI application factory."""
from __future__ import annotations

import logging
import threading
from collections import Counter
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DataError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from api.edge import LOCAL_HOSTS, HostCheck, SecurityHeaders, add_docs
from api.guard import Guard
from api.limits import BodySizeLimit
from api.suggest import suggest_fields
from api.observe import HttpMetrics, Observe
from api.ratelimit import Callers, RateLimit
from api.routers import (checkpoints, dashboard, datasets, embeddings, explore, health, jobs, keys, methods, neighbors,
                         scores, usage, words)
from api.totals import Totals
from jobs import cache
from jobs.migrate import upgrade
from jobs.settings import Settings, get_settings

log = logging.getLogger(__name__)


def trim_cache_every(settings: Settings, stop: threading.Event) -> None:
    """The API's copies of remote artifacts (downloads, models, indexes) stay under cache_max_bytes."""
    while not stop.wait(settings.cache_interval):
        try:
            cache.trim(settings.home / "cache", settings.cache_max_bytes, settings.cache_min_age)
        except Exception:
            log.warning("cache trim failed; will retry", exc_info=True)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = (settings.resolved() if settings else get_settings())
    if settings.migrate_on_start:
        upgrade(settings.database_url)

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        stop = threading.Event()
        if settings.cache_interval > 0:
            threading.Thread(target=trim_cache_every, args=(settings, stop), daemon=True, name="cache-trim").start()
        yield
        stop.set()

    app = FastAPI(title="darkmatter", version="0.1.0", lifespan=lifespan, docs_url=None, redoc_url=None,
                  description="Self-supervised pretraining as a service: jobs, checkpoints, embeddings, scores.")
    app.state.settings = settings
    app.state.http_metrics = HttpMetrics()
    app.state.event_streams = Counter()  # open SSE streams per project
    app.state.job_totals = Totals(settings.job_total_seconds)
    app.state.callers = Callers(settings.rate_limit_per_second, settings.rate_limit_burst,
                                settings.failed_auth_per_minute, settings.failed_auth_burst)
    for router in (jobs.router, datasets.router, checkpoints.router, embeddings.router, neighbors.router, scores.router,
                   methods.router, keys.router, explore.router, usage.router, words.router):
        app.include_router(router, prefix="/v1")
    app.include_router(health.router)
    app.include_router(dashboard.router)
    page_csp = add_docs(app)
    app.mount("/static", dashboard.static_files(), name="static")
    # Outermost last: the rate limit answers before any body is read, the size cap before it is buffered,
    # the key (or launch token) is checked before the body is read and scanned.
    app.add_middleware(Guard, settings=settings, callers=app.state.callers, max_depth=settings.max_json_depth,
                       multipart_routes={("POST", "/v1/datasets")}, public_prefixes=("/v1/methods",))
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes,
                       route_limits={("POST", "/v1/jobs"): settings.max_json_body_bytes,
                                     ("POST", "/v1/datasets"): settings.max_json_body_bytes},
                       streamed={("POST", "/v1/datasets")}, large_bytes=settings.large_body_bytes,
                       large_slots=settings.large_body_slots, large_seconds=settings.large_body_seconds)
    app.add_middleware(RateLimit, callers=app.state.callers, exempt_paths={"/healthz", "/readyz"})
    if settings.launch_token or settings.allowed_hosts:  # the served localhost default, or a deployment naming its hosts
        app.add_middleware(HostCheck, allowed=[*LOCAL_HOSTS, *settings.allowed_hosts.split(",")],
                           exempt_paths={"/healthz", "/readyz"})
    app.add_middleware(SecurityHeaders, page_csp=page_csp)
    app.add_middleware(Observe, metrics=app.state.http_metrics)  # outermost: sees every answer, 429s included

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        errors = [{"loc": list(e.get("loc", [])), "msg": str(e.get("msg", "")), "type": e.get("type")}
                  for e in exc.errors()]
        return JSONResponse({"detail": suggest_fields(errors, request.scope.get("route"))}, status_code=422)

    @app.exception_handler(OverflowError)
    @app.exception_handler(DataError)
    async def out_of_range(_: Request, exc: Exception):  # e.g. an offset beyond the database's integers
        return JSONResponse({"detail": "a value in the request is out of range"}, status_code=422)

    @app.exception_handler(RecursionError)
    async def too_deep(_: Request, exc: Exception):  # a backstop: api.guard refuses deep bodies first
        return JSONResponse({"detail": "the request is nested too deeply"}, status_code=422)

    @app.exception_handler(PoolTimeout)
    @app.exception_handler(OperationalError)
    async def database_busy(_: Request, exc: Exception):  # the pool exhausted, the database locked or down
        log.warning("database busy or unreachable: %s", exc)
        return JSONResponse({"detail": "the service is busy; retry"}, status_code=503, headers={"Retry-After": "1"})

    @app.exception_handler(Exception)
    async def unexpected(_: Request, exc: Exception):  # last resort: log it, answer JSON
        log.exception("unhandled error")
        return JSONResponse({"detail": "internal error"}, status_code=500)

    return app
