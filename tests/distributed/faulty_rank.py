"""`python -m tests.distributed.faulty_rank MODE JOB_ID WORKER_ID` under torchrun: workers.child's
main with the job's body replaced by a fault on one rank (the service code around it is real).
MODE: transient (rank 1 loses the database), bug (rank 1 raises ValueError), unrecorded (the job
finishes but rank 0 cannot write the final state)."""
from __future__ import annotations

import sys

import torch.distributed as dist
from sqlalchemy.exc import OperationalError

from jobs import lifecycle
from workers import child


def main(mode: str, job_id: str, worker_id: str) -> int:
    import workers.pretrain

    def job_body(ctx, spec):
        if ctx.rank == 1 and mode == "transient":
            raise ConnectionError("database connection reset")
        if ctx.rank == 1 and mode == "bug":
            raise ValueError("a bad value on rank 1")
        dist.barrier()  # rank 0 waits for rank 1, as a training step would
        return lifecycle.SUCCEEDED, {"step": 8}, None

    def finish_without_database(*args, **kwargs):
        raise OperationalError("UPDATE jobs", {}, ConnectionError("database went away"))

    workers.pretrain.run_pretrain = job_body
    if mode == "unrecorded":  # the database is gone for good: no ~100 s of retries first
        import workers.context

        workers.context.retrying = lambda fn, **_: fn()
        child.lifecycle = type("Lifecycle", (), {**vars(lifecycle), "finish": staticmethod(finish_without_database)})
    return child.main(job_id, worker_id)


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:4]))
