"""API load: submit, list and get throughput and latency on loopback with 100k jobs in the table.

    .venv/bin/python -m benchmarks.api_load [--jobs 100000] [--seconds 10] [--clients 8]
        [--database-url postgresql+psycopg://postgres@127.0.0.1:5432/bench]

The jobs are inserted in bulk (with a few metrics each, so that listings read them); then each
operation runs from concurrent clients against a real API process for a fixed time. Target
(CPU): p99 < 50 ms for get and list. By default the database is the embedded SQLite file of a
fresh home; --database-url names another (it is migrated, and the benchmark's jobs are removed
from it afterwards)."""
from __future__ import annotations

import argparse
import json
import secrets
import time

from benchmarks import loadgen
from benchmarks.service import embedded_settings, start_api

TARGET_MS = 50.0


def fill(settings, n: int) -> list[str]:
    from sqlalchemy import insert, text

    from jobs.db import get_engine, session_scope
    from jobs.tables import DEFAULT_PROJECT, Job, Metric, utcnow

    run = secrets.token_hex(3)  # a shared database may hold an earlier run's rows
    ids = [f"job_bench{run}{i:09d}" for i in range(n)]
    now = utcnow()
    with session_scope(settings.database_url) as session:
        for start in range(0, n, 5000):
            chunk = ids[start:start + 5000]
            session.execute(insert(Job), [{
                "id": job_id, "project_id": DEFAULT_PROJECT, "kind": "pretrain", "state": "succeeded",
                "spec": {"method": "simclr", "dataset": "digits"}, "queue": "default", "method": "simclr",
                "attempt": 1, "max_attempts": 3, "step": 100, "total_steps": 100, "result": {},
                "compute_seconds": 1.0, "nodes": 1, "devices": 1, "created_at": now} for job_id in chunk])
            session.execute(insert(Metric), [{"job_id": job_id, "step": 100, "name": name, "value": 1.0, "at": now}
                                             for job_id in chunk for name in ("loss", "lr")])
    if not settings.database_url.startswith("sqlite"):
        # what autovacuum soon does after a bulk insert: the planner's statistics (without them it
        # estimates a few rows and sorts the 100k instead of reading the index) and the visibility
        # map (without it a count reads every row, not just the index)
        with get_engine(settings.database_url).connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM ANALYZE jobs"))
            conn.execute(text("VACUUM ANALYZE metrics"))
    return ids


def remove(settings, ids: list[str]) -> None:
    """The benchmark's jobs, with their metrics and events, from a database it shares."""
    from sqlalchemy import delete

    from jobs.db import session_scope
    from jobs.tables import Job, JobEvent, Metric

    with session_scope(settings.database_url) as session:
        for start in range(0, len(ids), 5000):
            chunk = ids[start:start + 5000]
            for table in (Metric, JobEvent):
                session.execute(delete(table).where(table.job_id.in_(chunk)))
            session.execute(delete(Job).where(Job.id.in_(chunk)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--database-url", default="", help="default: embedded SQLite in a fresh home")
    args = parser.parse_args()
    settings = embedded_settings(**({"database_url": args.database_url} if args.database_url else {}))
    database = settings.database_url.split(":")[0] if args.database_url else "embedded SQLite"
    started = time.monotonic()
    ids = fill(settings, args.jobs)
    print(f"api load: {args.jobs} jobs inserted in {time.monotonic() - started:.0f}s ({database}); "
          f"{args.clients} clients, {args.seconds:.0f}s per operation")
    proc, url = start_api(settings)
    spec = {"method": "simclr", "dataset": "digits", "backbone": "small_cnn", "steps": 2, "batch_size": 16}
    submitted: list[str] = []
    operations = {
        "get": lambda k, i: ("GET", f"/v1/jobs/{ids[(k * 7919 + i * 104729) % len(ids)]}", None),
        "list": lambda k, i: ("GET", f"/v1/jobs?limit=50&offset={(k * 50 + i * 500) % 5000}", None),
        "submit": lambda k, i: ("POST", "/v1/jobs", {**spec, "seed": k * 100_000 + i}),
    }
    keep_id = lambda name: (lambda body: submitted.append(json.loads(body)["id"])) if name == "submit" else None  # noqa: E731
    try:
        print(f"{'operation':<10} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8}")
        results = {}
        for name, request in operations.items():
            results[name] = loadgen.run(url, args.clients, args.seconds, request, keep_id(name))
            rate, p50, p99 = results[name]
            print(f"{name:<10} {rate:>8.1f} {p50:>8.1f} {p99:>8.1f}")
        for name in ("get", "list"):
            verdict = "met" if results[name][2] < TARGET_MS else "missed"
            print(f"{name} p99 {results[name][2]:.1f} ms: target < {TARGET_MS:.0f} ms {verdict}")
    finally:
        proc.terminate()
        proc.wait()
        if args.database_url:
            remove(settings, ids + submitted)


if __name__ == "__main__":
    main()
