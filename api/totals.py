"""The `total` of job listings: counted exactly, except that a large total (where the count reads
tens of thousands of index entries, milliseconds on every request) is reused for a moment."""
from __future__ import annotations

import threading
import time
from collections import Counter
from typing import Callable, Hashable

EXACT_BELOW = 10_000  # smaller totals are always counted
MAX_ENTRIES = 1_000  # (project, filters) remembered at once


class Totals:
    def __init__(self, seconds: float, exact_below: int = EXACT_BELOW):
        self.seconds, self.exact_below = seconds, exact_below
        self.lock = threading.Lock()
        self.entries: dict[tuple, tuple[int, float]] = {}  # (project, *filters) -> (total, good until)
        self.counting: set[tuple] = set()  # keys being recounted now
        self.changes: Counter[str] = Counter()  # project -> forget() calls, so a count begun before one is not kept

    def get(self, project: str, filters: tuple[Hashable, ...], count: Callable[[], int]) -> int:
        key, now = (project, *filters), time.monotonic()
        with self.lock:
            remembered = self.entries.get(key)
            # one request recounts an expired total; the others meanwhile answer the one it replaces
            if remembered is not None and (remembered[1] > now or key in self.counting):
                return remembered[0]
            self.counting.add(key)
            changes = self.changes[project]
        try:
            total = count()
        finally:
            with self.lock:
                self.counting.discard(key)
        if self.seconds > 0 and total >= self.exact_below:
            with self.lock:
                if len(self.entries) >= MAX_ENTRIES:
                    self.entries = {k: v for k, v in self.entries.items() if v[1] > now}
                if len(self.entries) < MAX_ENTRIES and self.changes[project] == changes:
                    self.entries[key] = (total, now + self.seconds)
        return total

    def forget(self, project: str) -> None:
        """The project's jobs changed here (a submit, a cancel): count again on the next listing."""
        with self.lock:
            self.entries = {k: v for k, v in self.entries.items() if k[0] != project}
            self.changes[project] += 1
