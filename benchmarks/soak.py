"""Soak test: many tiny jobs while workers and training children are killed with SIGKILL at random
and restarted. Closing line: `jobs=… kills=… lost=… duplicated=…`.

lost: jobs that did not end `succeeded`. duplicated: jobs whose claims outnumber their attempts,
or with more than one final checkpoint (a job that ran twice at once).

    python -m benchmarks.soak --backend sqlite --jobs 30 --workers 2 --minutes 10 --kill-every 5
"""
from __future__ import annotations

import argparse
import logging
import os
import random
import tempfile
import time
from pathlib import Path

from sqlalchemy import func, select

log = logging.getLogger("soak")
SPEC = {"method": "simclr", "backbone": "small_cnn", "backbone_options": {"width": 8}, "dataset": "digits",
        "steps": 40, "batch_size": 32, "log_every": 5, "checkpoint_every": 10, "keep_last": 2, "evaluations": [],
        "max_attempts": 20, "method_options": {"proj_hidden_dim": 32, "proj_dim": 16}}


def training_children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                if ppid == pid and b"workers.child" in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except (OSError, ValueError, IndexError):
                continue
    return found


def tally(settings, job_ids: list[str]) -> dict:
    from jobs.db import session_scope
    from jobs.tables import Checkpoint, Job, JobEvent

    with session_scope(settings.database_url) as session:
        states = dict(session.execute(select(Job.id, Job.state).where(Job.id.in_(job_ids))).all())
        attempts = dict(session.execute(select(Job.id, Job.attempt).where(Job.id.in_(job_ids))).all())
        claims = dict(session.execute(select(JobEvent.job_id, func.count()).where(
            JobEvent.job_id.in_(job_ids), JobEvent.message.like("claimed by %")).group_by(JobEvent.job_id)).all())
        finals = dict(session.execute(select(Checkpoint.job_id, func.count()).where(
            Checkpoint.job_id.in_(job_ids), Checkpoint.final.is_(True)).group_by(Checkpoint.job_id)).all())
    duplicated = [j for j in job_ids if claims.get(j, 0) > attempts[j] or finals.get(j, 0) > 1]
    return {"states": states, "attempts": attempts, "duplicated": duplicated}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--backend", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--jobs", type=int, default=30)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--minutes", type=float, default=10.0, help="stop killing after this long")
    parser.add_argument("--kill-every", type=float, default=5.0, help="mean seconds between kills")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    os.environ.setdefault("OMP_NUM_THREADS", "1")

    from fastapi.testclient import TestClient

    from api.app import create_app
    from jobs.migrate import upgrade
    from tests.conftest import WorkerProcess, make_settings

    rng = random.Random(args.seed)
    home = Path(tempfile.mkdtemp(prefix="darkmatter-soak-"))
    settings, cleanup = make_settings(args.backend, home)
    settings = settings.model_copy(update={"heartbeat_interval": 0.5, "heartbeat_timeout": 5.0, "sweep_interval": 1.0,
                                           "requeue_after": 20.0, "rate_limit_per_second": 0.0})
    upgrade(settings.database_url)
    workers = [WorkerProcess(settings, name=f"w{i}").start() for i in range(args.workers)]
    kills = {"worker": 0, "child": 0}
    started = time.monotonic()
    try:
        with TestClient(create_app(settings)) as api:
            job_ids = [api.post("/v1/jobs", json={**SPEC, "seed": i}).json()["id"] for i in range(args.jobs)]
            deadline = started + args.minutes * 60
            while time.monotonic() < deadline:
                time.sleep(rng.expovariate(1 / args.kill_every))
                states = tally(settings, job_ids)["states"]
                if all(s in ("succeeded", "failed", "cancelled") for s in states.values()):
                    break
                index = rng.randrange(len(workers))
                victim = workers[index]
                children = training_children(victim.proc.pid)
                if children and rng.random() < 0.6:
                    os.kill(children[0], 9)
                    kills["child"] += 1
                else:
                    victim.kill()
                    workers[index] = WorkerProcess(settings, name=f"w{index}").start()
                    kills["worker"] += 1
                done = sum(s == "succeeded" for s in states.values())
                log.info("t=%.0fs kills=%s succeeded=%d/%d", time.monotonic() - started, kills, done, len(job_ids))
            log.info("killing stopped; waiting for the remaining jobs")
            finish_by = time.monotonic() + 300
            while time.monotonic() < finish_by:
                if all(s in ("succeeded", "failed", "cancelled") for s in tally(settings, job_ids)["states"].values()):
                    break
                time.sleep(1)
        result = tally(settings, job_ids)
    finally:
        for w in workers:
            w.stop()
        from jobs.db import get_engine

        get_engine(settings.database_url).dispose()
        cleanup()
    lost = [j for j, s in result["states"].items() if s != "succeeded"]
    elapsed = time.monotonic() - started
    log.info("attempts per job: mean %.2f, max %d; worker kills %d, child kills %d; %.0f s",
             sum(result["attempts"].values()) / len(job_ids), max(result["attempts"].values()), kills["worker"],
             kills["child"], elapsed)
    if lost:
        log.info("lost: %s", {j: result["states"][j] for j in lost})
    print(f"jobs={len(job_ids)} kills={sum(kills.values())} lost={len(lost)} duplicated={len(result['duplicated'])}")


if __name__ == "__main__":
    main()
