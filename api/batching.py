"""Dynamic batching for the embedding endpoints: concurrent requests for the same checkpoint are
stacked into one forward pass.

The first request for a model becomes the batch's leader: it waits up to `max_wait_ms` (or
until `max_batch` rows are pending), then runs one forward pass for every request that joined
and hands each its rows. The others wait for their rows until their deadline. Handlers are sync
FastAPI routes, so requests arrive on the server's worker threads, never on the event loop."""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import torch
from torch import Tensor


class DeadlineExceeded(TimeoutError):
    pass


@dataclass
class _Request:
    x: Tensor
    done: threading.Event = field(default_factory=threading.Event)
    result: Tensor | None = None
    error: BaseException | None = None


class Batcher:
    def __init__(self, max_batch: int = 256, max_wait_ms: float = 5.0):
        self.max_batch, self.max_wait = max_batch, max_wait_ms / 1000
        self.pending: dict[str, list[_Request]] = {}
        self.lock = threading.Lock()
        self.forwards = 0  # forward passes run (what batching saves)

    def run(self, key: str, forward, x: Tensor, deadline_s: float = 30.0) -> Tensor:
        """forward(x) for rows x, batched with concurrent calls for the same key."""
        if self.max_batch <= 1 or self.max_wait <= 0:
            self.forwards += 1
            return forward(x)
        request = _Request(x)
        with self.lock:
            queue = self.pending.setdefault(key, [])
            queue.append(request)
            leader = len(queue) == 1
        if leader:
            self._lead(key, forward)
        elif not request.done.wait(deadline_s):
            raise DeadlineExceeded(f"no result within {deadline_s:.1f}s")
        if request.error is not None:
            raise request.error
        return request.result

    def _lead(self, key: str, forward) -> None:
        until = time.monotonic() + self.max_wait
        while time.monotonic() < until:
            with self.lock:
                if sum(len(r.x) for r in self.pending[key]) >= self.max_batch:
                    break
            time.sleep(0.0005)
        with self.lock:
            batch = self.pending.pop(key)
        try:
            out = forward(torch.cat([r.x for r in batch]))
            self.forwards += 1
            start = 0
            for r in batch:
                r.result = out[start:start + len(r.x)]
                start += len(r.x)
        except BaseException as exc:
            for r in batch:
                r.error = exc
        finally:
            for r in batch:
                r.done.set()
