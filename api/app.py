"""The FastAPI application factory."""
from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DataError

from api.limits import BodySizeLimit, RateLimit
from api.observe import HttpMetrics, Observe
from api.routers import (checkpoints, dashboard, datasets, embeddings, explore, health, jobs, keys, methods, neighbors,
                         scores)
from jobs.migrate import upgrade
from jobs.settings import Settings, get_settings

log = logging.getLogger(__name__)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = (settings.resolved() if settings else get_settings())
    if settings.migrate_on_start:
        upgrade(settings.database_url)
    app = FastAPI(title="darkmatter", version="0.1.0",
                  description="Self-supervised pretraining as a service: jobs, checkpoints, embeddings, scores.")
    app.state.settings = settings
    app.state.http_metrics = HttpMetrics()
    for router in (jobs.router, datasets.router, checkpoints.router, embeddings.router, neighbors.router, scores.router,
                   methods.router, keys.router, explore.router):
        app.include_router(router, prefix="/v1")
    app.include_router(health.router)
    app.include_router(dashboard.router)
    app.mount("/static", dashboard.static_files(), name="static")
    # Outermost last: the rate limit answers before any body is read.
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes, exempt={("POST", "/v1/datasets")})
    if settings.rate_limit_per_second > 0:
        app.add_middleware(RateLimit, rate=settings.rate_limit_per_second, burst=settings.rate_limit_burst,
                           exempt_paths={"/healthz", "/readyz"})
    app.add_middleware(Observe, metrics=app.state.http_metrics)  # outermost: sees every answer, 429s included

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError):
        errors = [{"loc": list(e.get("loc", [])), "msg": str(e.get("msg", "")), "type": e.get("type")}
                  for e in exc.errors()]
        return JSONResponse({"detail": errors}, status_code=422)

    @app.exception_handler(OverflowError)
    @app.exception_handler(DataError)
    async def out_of_range(_: Request, exc: Exception):  # e.g. an offset beyond the database's integers
        return JSONResponse({"detail": "a value in the request is out of range"}, status_code=422)

    @app.exception_handler(Exception)
    async def unexpected(_: Request, exc: Exception):  # last resort: log it, answer JSON
        log.exception("unhandled error")
        return JSONResponse({"detail": "internal error"}, status_code=500)

    return app
