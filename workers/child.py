"""Entry point of the training child process: `python -m workers.child JOB_ID WORKER_ID`.

Under torchrun (WORLD_SIZE > 1) it is one rank of a process group: every rank trains, rank 0
alone writes (events, metrics, checkpoints, scores, the final state) under the job's lease,
WORKER_ID being the worker that holds it; a rank that meets an error of the job records it (with
its traceback) itself. Each rank leaves its exit code in DARKMATTER_OUTCOME_DIR for the worker.
`run_rank` is also the body of each Ray Train worker of a multi-node job (workers/ray_run.py)."""
from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
import traceback
from datetime import timedelta

import torch
import torch.distributed as dist

from sqlalchemy.exc import OperationalError

from jobs import lifecycle
from jobs.db import retrying, session_scope
from jobs.logs import configure, current_job
from jobs.settings import get_settings
from jobs.tables import Job
from workers.context import JobContext
from workers.launch import die_with_parent

log = logging.getLogger("workers.child")
# Exit codes the worker reads (workers/runner.py).
LEFT = 3  # shutdown, or the lease moved on: the job is left to the worker / the new owner
LOST_GROUP = 4  # the process group broke (a rank died); the worker gives the job back
TRANSIENT = 5  # an infrastructure error (database, storage, network): the worker gives the job back
UNRECORDED = 6  # finished, but the final state could not be written: the worker records it
PERMANENT_OS_ERRORS = (FileNotFoundError, FileExistsError, PermissionError, IsADirectoryError, NotADirectoryError)
TRANSIENT_MODULES = ("botocore", "aiobotocore", "aiohttp", "s3fs", "urllib3", "psycopg", "redis", "kombu")


def transient(exc: BaseException) -> bool:
    """Whether an exception is the infrastructure's (retry the job) rather than the job's (fail it)."""
    if isinstance(exc, (OperationalError, ConnectionError, TimeoutError)):
        return True
    if isinstance(exc, OSError) and not isinstance(exc, PERMANENT_OS_ERRORS):
        return True
    return type(exc).__module__.split(".")[0] in TRANSIENT_MODULES


def join_group(timeout_seconds: float) -> int:
    """Join torchrun's process group (NCCL for CUDA tensors where there are GPUs, gloo for the
    CPU); returns this process's rank (0 without torchrun). A collective that waits longer than
    timeout_seconds (a dead peer) raises rather than hanging for torch's default 10-30 minutes."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return 0
    die_with_parent()  # torchrun's agent dying (its worker killed) takes the ranks with it
    dist.init_process_group("cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo",
                            timeout=timedelta(seconds=timeout_seconds))
    return dist.get_rank()


def leave_group() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def broken_group(exc: BaseException, ctx: JobContext) -> bool:
    """Whether an exception in a rank comes from the process group breaking (a peer died, or the
    agent is tearing the group down), not from the job itself."""
    if not (dist.is_available() and dist.is_initialized()):
        return False
    text = str(exc)
    return ctx.shutdown or isinstance(exc, dist.DistError) or any(
        s in text for s in ("Connection closed by peer", "Connection reset by peer", "gloo", "NCCL"))


def main(job_id: str, worker_id: str) -> int:
    settings = get_settings()
    configure("child", logging.INFO, settings.log_format)
    current_job.set(job_id)
    rank = join_group(settings.process_group_timeout)
    code, recorded = run_rank(settings, job_id, worker_id, rank)
    write_outcome(rank, code, recorded)
    return code


def write_outcome(rank: int, code: int, recorded: dict | None) -> None:
    """This rank's exit code (and a final state it could not write) for the worker: torchrun
    reports every failed group as exit code 1, so the worker reads the ranks' own codes here."""
    folder = os.environ.get("DARKMATTER_OUTCOME_DIR")
    if not folder:
        return
    path = os.path.join(folder, f"rank-{rank}.json")
    with open(path + ".tmp", "w") as f:
        json.dump({"rank": rank, "code": code, "recorded": recorded}, f)
    os.replace(path + ".tmp", path)


def run_rank(settings, job_id: str, worker_id: str, rank: int) -> tuple[int, dict | None]:
    """Run this rank's share of the job (the process group, if any, is already joined); returns
    (exit code, the final state when it finished but could not write it)."""
    def lease():
        with session_scope(settings.database_url) as session:
            job = session.get(Job, job_id)
            return None if job is None else (job.worker_id, job.state, job.attempt, job.kind, dict(job.spec))

    try:
        row = retrying(lease, attempts=20)
    except OperationalError:
        return TRANSIENT, None
    if row is None or row[0] != worker_id or row[1] not in lifecycle.ACTIVE:
        return LEFT, None
    _, _, attempt, kind, spec = row
    ctx = JobContext(settings, job_id, worker_id, rank=rank, attempt=attempt)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda *_: ctx.request_shutdown())
    try:
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
    except lifecycle.LeaseLost as exc:
        log.warning("job %s: %s; stopping without writing", job_id, exc)
        return LEFT, None
    except Exception as exc:
        if broken_group(exc, ctx):
            log.warning("job %s: rank %d lost its process group: %s", job_id, rank, exc)
            return LOST_GROUP, None
        if transient(exc):
            log.warning("job %s: transient error, giving the job back: %s", job_id, exc, exc_info=True)
            try:
                ctx.event("log", f"transient error, the job will be retried: {type(exc).__name__}: {exc}"[:4000])
            except Exception:
                pass
            return TRANSIENT, None
        log.exception("job %s failed on rank %d", job_id, rank)
        # any rank records its own error (fenced by the lease): the others then find the job ended
        where = f"rank {rank}: " if distributed_run() else ""
        state, result, error = lifecycle.FAILED, {}, f"{where}{type(exc).__name__}: {exc}"
        try:
            ctx.write(lambda s: lifecycle.log_event(s, job_id, "log", where + traceback.format_exc()[-4000:]))
        except lifecycle.LeaseLost:
            return LEFT, None
        except OperationalError:
            pass
        rank = 0  # this rank writes the final state below
    finally:
        leave_group()
    if rank != 0:
        return 0, None
    if state is None:  # shutdown or lost lease: leave the job to the parent / sweeper
        return LEFT, None
    try:
        ctx.write(lambda session: lifecycle.finish(session, job_id, worker_id, state, error=error, result=result))
    except lifecycle.LeaseLost:
        return LEFT, None
    except OperationalError:  # the work is done: the worker records it rather than rerunning the job
        return UNRECORDED, {"state": state, "error": error, "result": result}
    return 0, None


def distributed_run() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
