"""`python -m workers [--queue Q ...]`: a Celery worker (solo pool, one job at a time) plus a sweeper."""
from __future__ import annotations

import argparse
import logging
import threading
import time

from celery.signals import worker_shutting_down

from jobs.migrate import upgrade
from jobs.settings import get_settings
from workers import runner
from workers.celery_app import create_celery

log = logging.getLogger("workers")


def sweeper(settings, stop: threading.Event) -> None:
    """Re-queue jobs of lost workers every sweep_interval; collect unregistered files every gc_interval."""
    last_gc = time.monotonic()
    while not stop.wait(settings.sweep_interval):
        try:
            runner.sweep_once(settings)
        except Exception:
            log.warning("sweep failed; will retry", exc_info=True)
        if settings.gc_interval > 0 and time.monotonic() - last_gc >= settings.gc_interval:
            last_gc = time.monotonic()
            try:
                runner.collect_garbage(settings)
            except Exception:
                log.warning("garbage collection failed; will retry", exc_info=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="darkmatter worker")
    parser.add_argument("--queue", "-Q", action="append", help="queue(s) to consume (default: all configured)")
    parser.add_argument("--name", default=None, help="worker node name")
    parser.add_argument("--loglevel", default="INFO")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.loglevel, format="%(asctime)s worker %(levelname)s %(name)s: %(message)s")
    settings = get_settings()
    if settings.migrate_on_start:
        upgrade(settings.database_url)
    queues = ",".join(q for item in (args.queue or settings.queue_list) for q in item.split(","))
    stop = threading.Event()
    threading.Thread(target=sweeper, args=(settings, stop), daemon=True, name="sweeper").start()
    worker_shutting_down.connect(lambda **_: runner.request_stop(), weak=False)
    app = create_celery(settings)
    argv = ["worker", "-Q", queues, "-P", "solo", "-c", "1", "--loglevel", args.loglevel, "--without-mingle",
            "--without-gossip"]
    if args.name:
        argv += ["-n", args.name]
    try:
        app.worker_main(argv)
    finally:
        stop.set()


if __name__ == "__main__":
    main()
