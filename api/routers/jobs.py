"""Jobs: submit, list, inspect, cancel, metrics and events."""
from __future__ import annotations

from functools import partial
from typing import Annotated, Literal

from fastapi import APIRouter, Body, Header, HTTPException, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from api.auth import key_is_active
from api.deps import CallerDep, ProjectDep, SessionDep, SettingsDep
from api.events import Cursor, event_dict, feed
from api.removal import delete_now
from api.schemas import JobList, JobOut
from core.data import DatasetUnavailable
from jobs import deletion, fleet, lifecycle
from jobs.datasets import DatasetNotFound
from jobs.db import session_scope
from jobs.queue import enqueue
from jobs.quotas import QuotaExceeded, Quotas
from jobs.specs import JobSpec
from jobs.submit import CheckpointNotFound, IdempotencyConflict, SpecRejected, create_job
from jobs.tables import Job, JobEvent, Metric

router = APIRouter(tags=["jobs"])


def get_job(session, project: str, job_id: str) -> Job:
    job = session.get(Job, job_id)
    if job is None or job.project_id != project:
        raise HTTPException(404, f"job {job_id!r} not found")
    return job


def latest_metrics(session, job_ids: list[str]) -> dict[str, dict[str, float]]:
    """Each job's newest value of every metric, for any number of jobs in one query."""
    if not job_ids:
        return {}
    newest = select(func.max(Metric.id)).where(Metric.job_id.in_(job_ids)).group_by(Metric.job_id, Metric.name)
    out: dict[str, dict[str, float]] = {job_id: {} for job_id in job_ids}
    for job_id, name, value in session.execute(select(Metric.job_id, Metric.name, Metric.value)
                                               .where(Metric.id.in_(newest))):
        out[job_id][name] = value
    return out


def progress(step: int, total_steps: int, state: str) -> float:
    return min(1.0, step / total_steps) if total_steps else (1.0 if state == "succeeded" else 0.0)


def job_out(session, job: Job, settings=None) -> JobOut:
    """One job as the API shows it, with its newest metrics (and, given settings, why it waits)."""
    out = JobOut.model_validate(job)
    if settings is not None:  # the single-job view: why a waiting job waits
        out.status, out.warnings = fleet.job_status(session, settings, job)
    out.progress = progress(job.step, job.total_steps, job.state)
    out.metrics = latest_metrics(session, [job.id])[job.id]
    return out


def listed_job(row, metrics: dict[str, float]) -> JobOut:
    """A row of the jobs table in a listing (validated from a dict: from a row's attributes it is
    several times slower)."""
    fields = row._mapping
    return JobOut.model_validate({**fields, "metrics": metrics,
                                  "progress": progress(fields["step"], fields["total_steps"], fields["state"])})


@router.post("/jobs", status_code=201, response_model=JobOut, responses={200: {"description": "an Idempotency-Key "
                                                                                   "replay: the job it created"}})
def submit(spec: Annotated[JobSpec, Body()], request: Request, response: Response, session: SessionDep,
           settings: SettingsDep, project: ProjectDep,
           idempotency_key: Annotated[str | None, Header(max_length=200)] = None) -> JobOut:
    if spec.queue not in settings.queue_list:
        raise HTTPException(422, f"queue {spec.queue!r} is not configured; configured queues: "
                                 f"{', '.join(settings.queue_list)} (DARKMATTER_QUEUES)")
    if getattr(spec, "nodes", 1) == 1 and getattr(spec, "devices", 1) > 1:
        if reason := fleet.too_few_devices(session, settings, spec.queue, spec.devices):
            raise HTTPException(422, reason)
    for attempt in range(2):  # a concurrent submit with the same Idempotency-Key may win the insert
        try:
            job, created = create_job(session, project, spec, idempotency_key, settings.max_model_parameters,
                                      settings.max_attempts, Quotas.from_settings(settings))
            session.commit()
            break
        except QuotaExceeded as exc:
            session.rollback()  # the project's lock goes now
            raise HTTPException(exc.status, str(exc), headers={"Retry-After": "60"} if exc.status == 429 else None)
        except IntegrityError:
            session.rollback()
            if not idempotency_key or attempt:
                raise
        except IdempotencyConflict as exc:
            raise HTTPException(409, str(exc))
        except (DatasetNotFound, CheckpointNotFound) as exc:
            raise HTTPException(404, str(exc))
        except (SpecRejected, DatasetUnavailable, ValueError) as exc:
            raise HTTPException(422, str(exc))
    if created:
        request.app.state.job_totals.forget(project)
        enqueue(settings, job.id, job.queue)
    else:
        response.status_code = 200  # a replay: the job the first request created
    return job_out(session, job, settings)


JobState = Literal[lifecycle.STATES]  # an unknown state is a 422 naming the states, not an empty page
JobKind = Literal["pretrain", "evaluate", "embed-index"]


@router.get("/jobs", response_model=JobList)
def list_jobs(request: Request, session: SessionDep, settings: SettingsDep, project: ProjectDep,
              state: JobState | None = None, kind: JobKind | None = None, method: str | None = None,
              limit: Annotated[int, Query(ge=1, le=500)] = 50,
              offset: Annotated[int, Query(ge=0, le=10**9)] = 0) -> JobList:
    """The project's jobs, newest first. `total` counts them all; a total of 10,000 or more may be
    up to DARKMATTER_JOB_TOTAL_SECONDS old (a submit or cancel through this process recounts)."""
    limit = min(limit, settings.page_size_max)
    where = [Job.project_id == project]
    for column, value in ((Job.state, state), (Job.kind, kind), (Job.method, method)):
        if value is not None:
            where.append(column == value)
    order = (Job.created_at.desc(), Job.id)
    total = request.app.state.job_totals.get(project, (state, kind, method), lambda: session.scalar(
        select(func.count()).select_from(Job).where(*where)))
    # The page's ids first, skipping `offset` entries of ix_jobs_project_created (no row read for
    # them), then only those rows: an OFFSET over whole rows reads every skipped row. Plain rows,
    # not ORM objects: nothing here is changed, and building 50 tracked objects costs more.
    page = select(Job.id).where(*where).order_by(*order).limit(limit).offset(offset).subquery()
    rows = session.execute(select(Job.__table__).join(page, Job.id == page.c.id).order_by(*order)).all()
    metrics = latest_metrics(session, [j.id for j in rows])  # one query for the page, not one per job
    return JobList(data=[listed_job(row, metrics[row.id]) for row in rows], total=total, limit=limit, offset=offset)


@router.get("/jobs/{job_id}", response_model=JobOut)
def read_job(job_id: str, session: SessionDep, settings: SettingsDep, project: ProjectDep) -> JobOut:
    return job_out(session, get_job(session, project, job_id), settings)


@router.post("/jobs/{job_id}/cancel", response_model=JobOut)
def cancel(job_id: str, request: Request, session: SessionDep, project: ProjectDep) -> JobOut:
    job = get_job(session, project, job_id)
    if job.state in lifecycle.TERMINAL:
        raise HTTPException(409, f"job {job_id} has already ended ({job.state})")
    lifecycle.request_cancel(session, job_id)
    session.commit()
    request.app.state.job_totals.forget(project)
    session.refresh(job)
    return job_out(session, job)


@router.delete("/jobs/{job_id}")
def delete_job(job_id: str, request: Request, session: SessionDep, settings: SettingsDep, project: ProjectDep) -> dict:
    """Delete an ended job: its events, metrics, checkpoints (files and scores), the scores it
    recorded and its index file. 409 while it is queued or running (cancel it first), or while one
    of its checkpoints is used by another job."""
    answer = delete_now(request, session, settings, lambda: deletion.delete_job(session, project, job_id))
    request.app.state.job_totals.forget(project)
    return answer


@router.get("/jobs/{job_id}/metrics")
def metrics(job_id: str, session: SessionDep, project: ProjectDep, name: str | None = None,
            after_step: Annotated[int, Query(ge=0, le=2**62)] = 0,
            limit: Annotated[int, Query(ge=1, le=10_000)] = 1000) -> dict:
    get_job(session, project, job_id)
    q = select(Metric).where(Metric.job_id == job_id, Metric.step > after_step)
    if name:
        q = q.where(Metric.name == name)
    rows = session.scalars(q.order_by(Metric.step, Metric.id).limit(limit)).all()
    return {"data": [{"step": m.step, "name": m.name, "value": m.value, "at": m.at.isoformat()} for m in rows]}


def read_events(settings, project: str, job_id: str, after: int, limit: int) -> tuple[list[dict], str]:
    """(events after `after`, the job's state) in a short session of its own (404 for a job of
    another project)."""
    with session_scope(settings.database_url) as session:
        state = get_job(session, project, job_id).state
        rows = session.scalars(select(JobEvent).where(JobEvent.job_id == job_id, JobEvent.id > after)
                               .order_by(JobEvent.id).limit(limit)).all()
        return [event_dict(e) for e in rows], state


@router.get("/jobs/{job_id}/events")
async def events(job_id: str, request: Request, settings: SettingsDep, caller: CallerDep,
                 stream: bool = False, after: Annotated[int, Query(ge=0, le=2**62)] = 0, metrics: bool = True,
                 last_event_id: Annotated[str | None, Header(max_length=100)] = None):
    """The job's events; with stream=true a Server-Sent Events stream (with its metrics unless
    metrics=false) until the job ends, resumable with the Last-Event-ID header. Every database
    read runs in a worker thread with its own short session: a stream holds no pooled connection
    between polls and never blocks the event loop. A stream re-checks its key every few seconds
    (key_recheck_seconds) and closes once the key is disabled or deleted."""
    project = caller.project
    rows, _ = await run_in_threadpool(read_events, settings, project, job_id, after, 0 if stream else 1000)
    if not stream:
        return {"data": rows}
    streams = request.app.state.event_streams  # project -> streams open now (one event loop: no lock)
    if sum(streams.values()) >= settings.max_event_streams or streams[project] >= settings.max_event_streams_per_project:
        raise HTTPException(429, f"too many event streams are open ({streams[project]} of this project, "
                                 f"{sum(streams.values())} in all); close some or poll without stream=true",
                            headers={"Retry-After": "5"})

    async def counted():
        streams[project] += 1  # counted while it runs
        try:
            key_active = (partial(key_is_active, settings.database_url, caller.key_id)
                          if caller.key_id is not None else None)
            async for text in feed(settings.database_url, job_id, Cursor.parse(last_event_id, after), metrics,
                                   request.is_disconnected, key_active, settings.key_recheck_seconds):
                yield text
        finally:
            streams[project] -= 1

    return StreamingResponse(counted(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
