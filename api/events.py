"""A job's Server-Sent Events stream: its events (state changes, log lines, collapse, checkpoints)
and its metrics grouped by step, until the job ends.

Each message's `id` is a cursor `E.M`: the last job event id and the last metric row id sent.
A client that reconnects with `Last-Event-ID: E.M` gets exactly what it has not seen."""
from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime, timezone

from fastapi.concurrency import run_in_threadpool
from sqlalchemy import select

from jobs import lifecycle
from jobs.db import session_scope
from jobs.tables import Job, JobEvent, Metric

POLL_SECONDS = 0.5
KEEPALIVE_SECONDS = 15.0
BATCH = 500


@dataclass
class Cursor:
    event: int = 0
    metric: int = 0

    @classmethod
    def parse(cls, last_event_id: str | None, after: int = 0) -> "Cursor":
        """From a Last-Event-ID header ("E.M", or a bare event id) or else the `after` event id.
        Anything unreadable starts from the beginning rather than failing the stream."""
        if last_event_id:
            head, _, tail = last_event_id.strip().partition(".")
            try:
                return cls(max(0, int(head)), max(0, int(tail or 0)))
            except ValueError:
                return cls(after, 0)
        return cls(after, 0)

    def __str__(self) -> str:
        return f"{self.event}.{self.metric}"


def event_dict(e: JobEvent) -> dict:
    return {"id": e.id, "at": e.at.isoformat(), "kind": e.kind, "message": e.message, "data": e.data}


def _naive(at: datetime) -> datetime:
    """SQLite gives naive UTC datetimes, PostgreSQL aware ones: compare them as naive UTC."""
    return at.astimezone(timezone.utc).replace(tzinfo=None) if at.tzinfo else at


def message(cursor: Cursor, kind: str, data: dict) -> str:
    return f"id: {cursor}\nevent: {kind}\ndata: {json.dumps(data)}\n\n"


def poll(database_url: str, job_id: str, cursor: Cursor, with_metrics: bool) -> tuple[list[str], str | None]:
    """The messages after `cursor` (advancing it) and the job's state."""
    out = []
    with session_scope(database_url) as s:
        job = s.get(Job, job_id)
        state, step, total = (job.state, job.step, job.total_steps) if job else (None, 0, 0)
        events = s.scalars(select(JobEvent).where(JobEvent.job_id == job_id, JobEvent.id > cursor.event)
                           .order_by(JobEvent.id).limit(BATCH)).all()
        rows = s.scalars(select(Metric).where(Metric.job_id == job_id, Metric.id > cursor.metric)
                         .order_by(Metric.id).limit(BATCH)).all() if with_metrics else []
        groups: list[tuple[int, dict, Metric]] = []  # (step, values, last row): consecutive rows of one step
        for m in rows:
            if groups and groups[-1][0] == m.step:
                groups[-1][1][m.name] = m.value
                groups[-1] = (m.step, groups[-1][1], m)
            else:
                groups.append((m.step, {m.name: m.value}, m))
        # one timeline: a merge by time that keeps each stream in its id order (so the cursor only moves forward)
        e_i = g_i = 0
        while e_i < len(events) or g_i < len(groups):
            take_event = g_i == len(groups) or (e_i < len(events) and
                                                _naive(events[e_i].at) <= _naive(groups[g_i][2].at))
            if take_event:
                cursor.event = events[e_i].id
                out.append(message(cursor, events[e_i].kind, event_dict(events[e_i])))
                e_i += 1
            else:
                metric_step, values, last = groups[g_i]
                cursor.metric = last.id
                out.append(message(cursor, "metrics", {"step": metric_step, "values": values, "job_step": step,
                                                       "total_steps": total, "state": state}))
                g_i += 1
    return out, state


REVOKED = "event: error\ndata: " + json.dumps({"detail": "the API key of this stream was disabled or deleted"}) + "\n\n"


async def feed(database_url: str, job_id: str, cursor: Cursor, with_metrics: bool, disconnected: Callable,
               key_active: Callable[[], bool] | None = None, recheck_seconds: float = 5.0) -> AsyncIterator[str]:
    """The stream's messages; `key_active` (a blocking check, run in a worker thread every
    `recheck_seconds`) ends it with an `error` event once the caller's key is disabled or deleted."""
    quiet_since = checked_at = time.monotonic()
    while not await disconnected():
        if key_active is not None and time.monotonic() - checked_at >= recheck_seconds:
            checked_at = time.monotonic()
            if not await run_in_threadpool(key_active):
                yield REVOKED
                return
        messages, state = await run_in_threadpool(poll, database_url, job_id, cursor, with_metrics)
        for text in messages:
            yield text
        if messages:
            quiet_since = time.monotonic()
        elif state is None or state in lifecycle.TERMINAL:
            yield f"id: {cursor}\nevent: end\ndata: {json.dumps({'state': state})}\n\n"
            return
        elif time.monotonic() - quiet_since > KEEPALIVE_SECONDS:
            quiet_since = time.monotonic()
            yield ": keep-alive\n\n"
        await asyncio.sleep(POLL_SECONDS if not messages else 0)
