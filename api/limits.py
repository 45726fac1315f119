"""Request limits as ASGI middleware: a cap on body size (also for chunked bodies that carry no
Content-Length) and a per-key token-bucket rate limit. Both answer JSON: 413 and 429."""
from __future__ import annotations

import hashlib
import json
import math
import threading
import time
from collections import OrderedDict

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send


async def send_json(send: Send, status: int, detail: str, headers: dict[str, str] | None = None) -> None:
    body = json.dumps({"detail": detail}).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


class BodySizeLimit:
    """413 for bodies over `max_bytes`; `exempt` (method, path) pairs enforce limits of their own
    (dataset uploads stream to disk under max_upload_bytes)."""

    def __init__(self, app: ASGIApp, max_bytes: int, exempt: set[tuple[str, str]] = frozenset()):
        self.app, self.max_bytes, self.exempt = app, max_bytes, exempt

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or (scope["method"], scope["path"].rstrip("/")) in self.exempt:
            return await self.app(scope, receive, send)
        too_large = f"request body is larger than {self.max_bytes} bytes"
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None:
            if not declared.isdigit():
                return await send_json(send, 400, "invalid Content-Length header")
            if int(declared) > self.max_bytes:
                return await send_json(send, 413, too_large)
        received, started = 0, False

        async def counted_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:  # a chunked body, or one longer than it said
                    raise HTTPException(413, too_large)
            return message

        async def watched_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted_receive, watched_send)
        except HTTPException as exc:
            if exc.status_code != 413 or started:
                raise
            await send_json(send, 413, too_large)


class TokenBuckets:
    """`rate` requests a second per identity, bursts up to `burst`; in memory, for one API process."""

    def __init__(self, rate: float, burst: int, max_identities: int = 10_000):
        self.rate, self.burst, self.max_identities = rate, burst, max_identities
        self.buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # identity -> (tokens, at)
        self.lock = threading.Lock()

    def take(self, identity: str, now: float | None = None) -> float:
        """0 when the request may go ahead, else the seconds until a token is available."""
        now = time.monotonic() if now is None else now
        with self.lock:
            tokens, at = self.buckets.pop(identity, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - at) * self.rate)
            wait = 0.0 if tokens >= 1 else (1 - tokens) / self.rate
            self.buckets[identity] = (tokens - 1 if wait == 0 else tokens, now)
            while len(self.buckets) > self.max_identities:  # forget the least recently seen
                self.buckets.popitem(last=False)
        return wait


def identity(scope: Scope) -> str:
    """The caller: a digest of its API key, or its address when it presents none."""
    headers = dict(scope.get("headers") or [])
    auth = headers.get(b"authorization", b"")
    key = auth[7:].strip() if auth[:7].lower() == b"bearer " else headers.get(b"x-api-key", b"")
    if key:
        return "key:" + hashlib.sha256(key).hexdigest()[:24]
    client = scope.get("client")
    return "addr:" + (client[0] if client else "unknown")


class RateLimit:
    def __init__(self, app: ASGIApp, rate: float, burst: int, exempt_paths: set[str] = frozenset()):
        self.app, self.buckets, self.exempt_paths = app, TokenBuckets(rate, burst), exempt_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.exempt_paths:
            return await self.app(scope, receive, send)
        wait = self.buckets.take(identity(scope))
        if wait > 0:
            return await send_json(send, 429, "rate limit exceeded; retry later",
                                   {"Retry-After": str(max(1, math.ceil(wait)))})
        await self.app(scope, receive, send)
