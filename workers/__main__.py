"""`python -m workers [--queue Q ...] [--gpus 0,1]`: a Celery worker (solo pool, one job at a time)
plus a sweeper that also renews the worker's row in the `workers` table."""
from __future__ import annotations

import argparse
import logging
import os
import socket
import threading
import time

from celery.signals import worker_shutting_down

from jobs import cache, fleet
from jobs.db import session_scope
from jobs.logs import configure
from jobs.migrate import upgrade
from jobs.settings import get_settings
from workers import runner
from workers.celery_app import create_celery

log = logging.getLogger("workers")


def sweeper(settings, stop: threading.Event, identity: dict) -> None:
    """Renew this worker's row and re-queue jobs of lost workers every sweep_interval; collect
    unregistered files every gc_interval; trim the artifact cache every cache_interval."""
    last_gc = last_trim = time.monotonic()
    while True:
        try:
            with session_scope(settings.database_url) as session:
                fleet.beat(session, **identity)
                fleet.forget_dead(session, settings)
        except Exception:
            log.warning("worker heartbeat failed; will retry", exc_info=True)
        if stop.wait(settings.sweep_interval):
            break
        try:
            runner.sweep_once(settings)
        except Exception:
            log.warning("sweep failed; will retry", exc_info=True)
        if settings.gc_interval > 0 and time.monotonic() - last_gc >= settings.gc_interval:
            last_gc = last_trim = time.monotonic()
            try:
                runner.collect_garbage(settings)
            except Exception:
                log.warning("garbage collection failed; will retry", exc_info=True)
        if settings.cache_interval > 0 and time.monotonic() - last_trim >= settings.cache_interval:
            last_trim = time.monotonic()
            try:  # local copies of remote checkpoints and datasets
                cache.trim(settings.home / "cache", settings.cache_max_bytes, settings.cache_min_age)
            except Exception:
                log.warning("cache trim failed; will retry", exc_info=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="darkmatter worker")
    parser.add_argument("--queue", "-Q", action="append", help="queue(s) to consume (default: all configured)")
    parser.add_argument("--name", default=None, help="worker node name")
    parser.add_argument("--gpus", default=None,
                        help="GPU ids this worker owns, e.g. 0,1 (default: DARKMATTER_GPUS, CUDA_VISIBLE_DEVICES, "
                             "else GPU 0 alone, never all)")
    parser.add_argument("--loglevel", default="INFO")
    parser.add_argument("--quiet", action="store_true", help="no Celery start-up banner (`darkmatter up` passes it)")
    args = parser.parse_args(argv)
    settings = get_settings()
    configure("worker", args.loglevel, settings.log_format)
    devices = own_gpus(args.gpus if args.gpus is not None else settings.gpus)
    if settings.migrate_on_start:
        upgrade(settings.database_url)
    queues = ",".join(q for item in (args.queue or settings.queue_list) for q in item.split(","))
    name = args.name.replace("%h", socket.gethostname()) if args.name else f"{socket.gethostname()}:{os.getpid()}"
    identity = {"worker_id": name, "hostname": socket.gethostname(), "queues": queues.split(","), "devices": devices}
    stop = threading.Event()
    threading.Thread(target=sweeper, args=(settings, stop, identity), daemon=True, name="sweeper").start()
    worker_shutting_down.connect(lambda **_: runner.request_stop(), weak=False)
    app = create_celery(settings)
    argv = ["worker", "-Q", queues, "-P", "solo", "-c", "1", "--loglevel", args.loglevel, "--without-mingle",
            "--without-gossip"]
    if args.quiet:
        argv = ["--quiet", *argv]  # a global option of the celery command: before `worker`
    if args.name:
        argv += ["-n", args.name]
    try:
        app.worker_main(argv)
    finally:
        stop.set()
        try:
            with session_scope(settings.database_url) as session:
                fleet.leave(session, name)
        except Exception:
            log.warning("could not remove this worker's row; it expires on its own", exc_info=True)


def own_gpus(requested: str | None) -> list[str]:
    """The GPU ids this worker owns, set as CUDA_VISIBLE_DEVICES for its training children (the
    parent never touches CUDA). Unset: CUDA_VISIBLE_DEVICES as given, else GPU 0 alone when the
    machine has GPUs, so that several workers on one machine never all share GPU 0..N."""
    if requested:
        ids = [g.strip() for g in requested.split(",") if g.strip()]
    elif "CUDA_VISIBLE_DEVICES" in os.environ:
        ids = [g.strip() for g in os.environ["CUDA_VISIBLE_DEVICES"].split(",") if g.strip()]
    else:
        ids = ["0"] if _machine_has_gpus() else []
        if ids:
            log.warning("no --gpus given: this worker owns GPU 0 only (give it --gpus 0,1,... for more)")
    os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(ids)
    return ids


def _machine_has_gpus() -> bool:
    return any(os.path.exists(f"/dev/nvidia{i}") for i in range(64))


if __name__ == "__main__":
    main()
