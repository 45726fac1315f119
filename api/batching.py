"""Dynamic batching for the embedding endpoints: concurrent requests for the same checkpoint are
stacked into one forward pass.

One forward pass per model runs at a time. A request that finds its model idle leads at once:
it waits up to `max_wait_ms` (0: not at all) or until `max_batch` rows are pending, then runs one
forward pass for itself and every request that queued, and hands each its rows. Requests that
arrive while the model is busy queue; when the pass ends the oldest of them leads the next one
(continuous batching: no added latency when idle, large batches under load). A queued request
gives up at its deadline. Handlers are sync FastAPI routes, so requests arrive on the server's
worker threads, never on the event loop."""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import torch
from torch import Tensor

from core.precision import resolve_precision


def encoder_forward(encoder: torch.nn.Module, precision: str = "auto"):
    """forward(x) -> float32 CPU embeddings of a batch, on the encoder's device; `precision`
    auto: bf16 autocast where the device computes bf16 natively."""
    device = next(encoder.parameters()).device
    bf16 = resolve_precision(precision, device) == "bf16"

    def forward(batch: Tensor) -> Tensor:
        with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            return encoder(batch.to(device, non_blocking=True)).float().cpu()

    return forward


class DeadlineExceeded(TimeoutError):
    pass


@dataclass(eq=False)  # compared by identity: queue membership must not compare tensors
class _Request:
    x: Tensor
    done: threading.Event = field(default_factory=threading.Event)
    leads: bool = False  # woken to lead the next forward pass, not with a result
    result: Tensor | None = None
    error: BaseException | None = None


class Batcher:
    def __init__(self, max_batch: int = 256, max_wait_ms: float = 0.0):
        self.max_batch, self.max_wait = max_batch, max_wait_ms / 1000
        self.pending: dict[str, list[_Request]] = {}  # a key with a list is busy: a pass runs or is due
        self.lock = threading.Lock()
        self.forwards = 0  # forward passes run (what batching saves)

    def run(self, key: str, forward, x: Tensor, deadline_s: float = 30.0) -> Tensor:
        """forward(x) for rows x, batched with concurrent calls for the same key."""
        if self.max_batch <= 1:
            self.forwards += 1
            return forward(x)
        request = _Request(x)
        with self.lock:
            request.leads = key not in self.pending  # the model is idle: no pass runs or is due
            self.pending.setdefault(key, []).append(request)
        until = time.monotonic() + deadline_s
        while not request.leads:
            if not request.done.wait(max(0.0, until - time.monotonic())):
                with self.lock:
                    if request.done.is_set():  # woken just now
                        continue
                    queue = self.pending.get(key, [])
                    if request in queue:  # still queued: never computed (else its pass runs on without it)
                        queue.remove(request)
                raise DeadlineExceeded(f"no result within {deadline_s:.1f}s")
            if request.leads or request.result is not None or request.error is not None:
                break
        if request.leads and request.result is None and request.error is None:
            self._lead(key, forward)
        if request.error is not None:
            raise request.error
        return request.result

    def _lead(self, key: str, forward) -> None:
        """Run one forward pass for the head of the queue (this caller) and whoever else fits."""
        until = time.monotonic() + self.max_wait
        while time.monotonic() < until:
            with self.lock:
                if sum(len(r.x) for r in self.pending[key]) >= self.max_batch:
                    break
            time.sleep(0.0002)
        with self.lock:
            queue, batch, rows = self.pending[key], [], 0
            while queue and (not batch or rows + len(queue[0].x) <= self.max_batch):
                batch.append(queue.pop(0))
                rows += len(batch[-1].x)
        try:
            out = forward(torch.cat([r.x for r in batch]) if len(batch) > 1 else batch[0].x)
            self.forwards += 1
            start = 0
            for r in batch:
                r.result = out[start:start + len(r.x)]
                start += len(r.x)
        except BaseException as exc:
            for r in batch:
                r.error = exc
        finally:
            with self.lock:
                for r in batch:
                    r.leads = False
                    r.done.set()
                if queue:  # the oldest waiting request leads the next pass
                    queue[0].leads = True
                    queue[0].done.set()
                else:
                    del self.pending[key]
