"""Structured logs: one JSON object a line, with the service, and the job id while one is being
handled (set with `job_scope`), so a job's lines can be found across the API, workers and children."""
from __future__ import annotations

import contextvars
import json
import logging
import sys
from contextlib import contextmanager
from datetime import datetime, timezone

current_job: contextvars.ContextVar[str | None] = contextvars.ContextVar("darkmatter_job", default=None)
STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str):
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        entry = {"ts": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
                 "level": record.levelname.lower(), "service": self.service, "logger": record.name,
                 "message": record.getMessage()}
        job_id = getattr(record, "job_id", None) or current_job.get()
        if job_id:
            entry["job_id"] = job_id
        for key, value in vars(record).items():  # fields passed with extra={...}
            if key not in STANDARD and key not in entry:
                entry[key] = value if isinstance(value, (str, int, float, bool, type(None))) else str(value)
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def configure(service: str, level: str | int = "INFO", fmt: str = "json") -> None:
    """Send the root logger to stderr as JSON lines (fmt="json") or plain text (fmt="text")."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter(service))
    else:
        handler.setFormatter(logging.Formatter(f"%(asctime)s {service} %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    logging.captureWarnings(True)  # Python warnings become log records too
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)  # a line per plugin at every start


@contextmanager
def job_scope(job_id: str):
    """Tag every log line written inside with this job id."""
    token = current_job.set(job_id)
    try:
        yield
    finally:
        current_job.reset(token)
