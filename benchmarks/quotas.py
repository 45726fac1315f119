"""Quota checks and deletions: how long the locked check of a submit takes, and a deletion, in a
project with many jobs, checkpoints and datasets.

    .venv/bin/python -m benchmarks.quotas [--jobs 20000] [--database-url postgresql+psycopg://...]

Prints the median and p99 of `quotas.admit_job` (project lock + counts + stored bytes, in its own
transaction, rolled back), of `quotas.usage`, and of `deletion.delete_job` for an ended job with
one checkpoint (rolled back too, so the table keeps its size)."""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path


def fill(url: str, project: str, n_jobs: int) -> list[str]:
    from sqlalchemy import insert

    from jobs.db import session_scope
    from jobs.tables import Checkpoint, Dataset, Job, Project, utcnow

    now, ended = utcnow(), []
    with session_scope(url) as session:
        session.add(Project(id=project, name=project))
        session.flush()
        session.execute(insert(Dataset), [{"id": f"ds_{project}{i}", "project_id": project, "name": "d", "uri": "u",
                                           "format": "zip", "state": "ready", "stats": {"source_bytes": 1000,
                                                                                         "prepared_bytes": 5000},
                                           "created_at": now} for i in range(500)])
        for start in range(0, n_jobs, 5000):
            rows = []
            for i in range(start, min(n_jobs, start + 5000)):
                kind = "embed-index" if i % 50 == 0 else "pretrain"
                state = "queued" if i % 400 == 0 else "succeeded"
                rows.append({"id": f"job_{project}{i}", "project_id": project, "kind": kind, "state": state,
                             "spec": {"dataset": f"ds_{project}{i % 500}"}, "queue": "default",
                             "result": {"bytes": 10_000} if kind == "embed-index" else {}, "created_at": now})
                if state == "succeeded" and kind == "pretrain" and len(ended) < 200:
                    ended.append(rows[-1]["id"])
            session.execute(insert(Job), rows)
        session.execute(insert(Checkpoint), [{"id": f"ckpt_{project}{i}", "project_id": project,
                                              "job_id": f"job_{project}{i * 4 + 1}", "step": 1, "final": True,
                                              "method": "simclr", "backbone": "small_cnn", "sha256": "0" * 64,
                                              "bytes": 1 << 20, "parts": {}, "manifest": {}, "created_at": now}
                                             for i in range(n_jobs // 4)])
    return ended


def timed(url: str, fn, runs: int) -> list[float]:
    from jobs.db import _factory

    out = []
    for i in range(runs):
        session = _factory(url)()
        started = time.perf_counter()
        fn(session, i)
        out.append((time.perf_counter() - started) * 1000)
        session.rollback()
        session.close()
    return out


def summary(ms: list[float]) -> dict:
    ms = sorted(ms)
    return {"median_ms": round(statistics.median(ms), 2), "p99_ms": round(ms[int(len(ms) * 0.99) - 1], 2)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--database-url", default="")
    args = parser.parse_args()
    from jobs import deletion, quotas
    from jobs.migrate import upgrade
    from jobs.settings import Settings

    home = Path(tempfile.mkdtemp(prefix="dm-quota-bench-"))
    settings = Settings(home=home, database_url=args.database_url).resolved()
    upgrade(settings.database_url)
    project = f"prj_bench{int(time.time())}"
    ended = fill(settings.database_url, project, args.jobs)
    if settings.database_url.startswith("postgresql"):  # statistics for the planner, as autovacuum keeps them
        from sqlalchemy import text

        from jobs.db import get_engine

        with get_engine(settings.database_url).connect() as conn:
            conn.execute(text("ANALYZE"))
    limits = quotas.Quotas(datasets=1000, stored_bytes=1 << 50, active_jobs=1000)
    results = {
        "database": settings.database_url.split(":")[0], "jobs": args.jobs, "checkpoints": args.jobs // 4,
        "admit_job": summary(timed(settings.database_url, lambda s, i: quotas.admit_job(s, limits, project, "pretrain"),
                                   args.runs)),
        "usage": summary(timed(settings.database_url, lambda s, i: quotas.usage(s, settings, project), args.runs)),
        "delete_job": summary(timed(settings.database_url,
                                    lambda s, i: deletion.delete_job(s, project, ended[i % len(ended)]),
                                    min(args.runs, len(ended)))),
    }
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
