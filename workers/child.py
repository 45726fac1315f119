"""Entry point of the training child process: `python -m workers.child JOB_ID WORKER_ID`."""
from __future__ import annotations

import logging
import signal
import sys
import traceback

from jobs import lifecycle
from jobs.db import retrying, session_scope
from jobs.settings import get_settings
from jobs.tables import Job
from workers.context import JobContext

log = logging.getLogger("workers.child")


def main(job_id: str, worker_id: str) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s child %(levelname)s %(message)s")
    settings = get_settings()
    ctx = JobContext(settings, job_id, worker_id)
    signal.signal(signal.SIGTERM, lambda *_: ctx.request_shutdown())
    try:
        with session_scope(settings.database_url) as session:
            job = session.get(Job, job_id)
            kind, spec = job.kind, dict(job.spec)
        if kind == "pretrain":
            from workers.pretrain import run_pretrain

            state, result, error = run_pretrain(ctx, spec)
        elif kind == "evaluate":
            from workers.evaluate import run_evaluate

            state, result, error = run_evaluate(ctx, spec)
        elif kind == "embed-index":
            from workers.embed_index import run_embed_index

            state, result, error = run_embed_index(ctx, spec)
        else:
            state, result, error = lifecycle.FAILED, {}, f"unknown job kind {kind!r}"
    except Exception as exc:
        log.exception("job %s failed", job_id)
        state, result, error = lifecycle.FAILED, {}, f"{type(exc).__name__}: {exc}"
        ctx.event("log", traceback.format_exc()[-4000:])
    if state is None:  # shutdown or lost lease: leave the job to the parent / sweeper
        return 3

    def settle():
        with session_scope(settings.database_url) as session:
            return lifecycle.finish(session, job_id, worker_id, state, error=error, result=result)

    retrying(settle)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
