"""Per-project (and global) caps on requests that hold a thread or the disk for long: uploads, the
t-SNE map, ONNX export. A request past a cap is answered 429 with Retry-After at once, rather than
queueing behind the others and starving every tenant's requests of the thread pool."""
from __future__ import annotations

import threading
from collections import Counter
from contextlib import contextmanager
from typing import Iterator

from fastapi import HTTPException, Request


class Slots:
    """At most `total` holders at once, and at most `per_project` of one project."""

    def __init__(self, what: str, total: int, per_project: int, retry_after: int = 5):
        self.what, self.total, self.per_project, self.retry_after = what, total, per_project, retry_after
        self.held: Counter = Counter()
        self.lock = threading.Lock()

    def _refuse(self, detail: str) -> HTTPException:
        return HTTPException(429, detail, headers={"Retry-After": str(self.retry_after)})

    @contextmanager
    def hold(self, project: str) -> Iterator[None]:
        with self.lock:
            if self.held[project] >= self.per_project:
                raise self._refuse(f"this project already has {self.held[project]} {self.what} running (at most "
                                   f"{self.per_project} at once); retry after {self.retry_after} s")
            if sum(self.held.values()) >= self.total:
                raise self._refuse(f"the service is running {self.total} {self.what} (its limit); "
                                   f"retry after {self.retry_after} s")
            self.held[project] += 1
        try:
            yield
        finally:
            with self.lock:
                self.held[project] -= 1
                if not self.held[project]:
                    del self.held[project]


def slots(request: Request, name: str, what: str, total: int, per_project: int) -> Slots:
    """The app's Slots of this name (created on first use, sized by the settings)."""
    with _CREATE:
        if not hasattr(request.app.state, "slots"):
            request.app.state.slots = {}
        registry = request.app.state.slots
        if name not in registry:
            registry[name] = Slots(what, total, per_project)
        return registry[name]


_CREATE = threading.Lock()
