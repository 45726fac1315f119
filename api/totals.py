"""The `total` of job listings: counted exactly, except that a large total (where the count reads
tens of thousands of index entries, milliseconds on every request) is reused for a moment."""
from __future__ import annotations

import threading
import time
from typing import Callable, Hashable

EXACT_BELOW = 10_000  # smaller totals are always counted
MAX_ENTRIES = 1_000  # (project, filters) remembered at once


class Totals:
    def __init__(self, seconds: float, exact_below: int = EXACT_BELOW):
        self.seconds, self.exact_below = seconds, exact_below
        self.lock = threading.Lock()
        self.entries: dict[tuple, tuple[int, float]] = {}  # (project, *filters) -> (total, good until)

    def get(self, project: str, filters: tuple[Hashable, ...], count: Callable[[], int]) -> int:
        key, now = (project, *filters), time.monotonic()
        with self.lock:
            remembered = self.entries.get(key)
        if remembered is not None and remembered[1] > now:
            return remembered[0]
        total = count()
        if self.seconds > 0 and total >= self.exact_below:
            with self.lock:
                if len(self.entries) >= MAX_ENTRIES:
                    self.entries = {k: v for k, v in self.entries.items() if v[1] > now}
                if len(self.entries) < MAX_ENTRIES:
                    self.entries[key] = (total, now + self.seconds)
        return total

    def forget(self, project: str) -> None:
        """The project's jobs changed here (a submit, a cancel): count again on the next listing."""
        with self.lock:
            self.entries = {k: v for k, v in self.entries.items() if k[0] != project}
