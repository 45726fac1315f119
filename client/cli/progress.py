"""Progress that reads well in both places it is seen: a live rich bar in a terminal, and in a
log (CI, nohup, a pipe) a plain line at each tenth of the way and at least every `every` seconds."""
from __future__ import annotations

import time

from rich.console import Console
from rich.progress import (BarColumn, DownloadColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                           TimeRemainingColumn, TransferSpeedColumn)

from client.cli.common import human_bytes


class Reporter:
    def __init__(self, console: Console, description: str, total: float | None, unit: str = "steps",
                 every: float = 30.0):
        self.console, self.description, self.total, self.unit, self.every = console, description, total, unit, every
        self.done, self.info = 0.0, ""
        self.started = time.monotonic()
        self.live = console.is_terminal
        self.bar, self.task = None, None
        self.last_line, self.last_tenth, self.printed = 0.0, -1, None
        self.first: tuple[float, float] | None = None  # (time, done) of the first update: the rate's origin

    def __enter__(self) -> "Reporter":
        if self.live:
            middle = ([DownloadColumn(), TransferSpeedColumn()] if self.unit == "bytes" else [MofNCompleteColumn()])
            self.bar = Progress(TextColumn("{task.description}"), BarColumn(), *middle, TextColumn("{task.fields[info]}"),
                                TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(), console=self.console)
            self.bar.start()
            self.task = self.bar.add_task(self.description, total=self.total or None, info="")
        return self

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.stop()
        elif exc[0] is None:
            self._line(force=True)

    def note(self, text: str) -> None:
        """A line above the bar (or in the log)."""
        (self.bar.console if self.bar else self.console).print(text, soft_wrap=True, markup=False)

    def update(self, done: float, total: float | None = None, info: str = "") -> None:
        self.done, self.info = done, info or self.info
        if self.first is None:
            self.first = (time.monotonic(), done)
        if total:
            self.total = total
        if self.bar is not None:
            self.bar.update(self.task, completed=done, total=self.total or None, info=self.info)
            return
        tenth = int(10 * done / self.total) if self.total else -1
        if tenth > self.last_tenth or time.monotonic() - self.last_line >= self.every:
            self.last_tenth = max(tenth, self.last_tenth)
            self._line()

    def eta(self) -> str:
        """From the rate since the first update (queueing and start-up do not count)."""
        if not self.total or self.first is None or self.done >= self.total or self.done <= self.first[1]:
            return ""
        rate = (self.done - self.first[1]) / max(time.monotonic() - self.first[0], 1e-6)
        seconds = int((self.total - self.done) / rate)
        return f"eta {seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"

    def _line(self, force: bool = False) -> None:
        if (not force and self.done == 0 and not self.info) or (self.done, self.info) == self.printed:
            return
        self.last_line, self.printed = time.monotonic(), (self.done, self.info)
        if self.unit == "bytes":
            amount = f"{human_bytes(self.done)}/{human_bytes(self.total)}" if self.total else human_bytes(self.done)
        else:
            amount = f"{self.done:.0f}/{self.total:.0f}" if self.total else f"{self.done:.0f}"
        percent = f"{100 * self.done / self.total:3.0f}% " if self.total else ""
        parts = [f"{self.description}: {percent}{amount}", self.info, self.eta()]
        self.console.print("  ".join(p for p in parts if p), soft_wrap=True, markup=False)
