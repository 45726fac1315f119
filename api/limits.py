"""Request limits as ASGI middleware: caps on body size (also for chunked bodies that carry no
Content-Length) and on JSON nesting, and token-bucket rate limits per verified API key, per
client address, and on failed authentications per address. They answer JSON: 413, 422, 429."""
from __future__ import annotations

import asyncio
import hashlib
import json
import math
import re
import threading
import time
from collections import OrderedDict

import numpy as np
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send


async def send_json(send: Send, status: int, detail: str, headers: dict[str, str] | None = None) -> None:
    body = json.dumps({"detail": detail}).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


def header(scope: Scope, name: bytes) -> bytes | None:
    return dict(scope.get("headers") or []).get(name)


def is_multipart(scope: Scope) -> bool:
    return (header(scope, b"content-type") or b"").lower().startswith(b"multipart/")


class BodySizeLimit:
    """413 for bodies over their route's limit: `route_limits` (method, path) -> bytes, else
    `max_bytes`. Multipart bodies on `streamed` routes enforce limits of their own (dataset
    uploads stream to disk under max_upload_bytes); their JSON bodies keep the route's limit."""

    def __init__(self, app: ASGIApp, max_bytes: int, route_limits: dict[tuple[str, str], int] | None = None,
                 streamed: set[tuple[str, str]] = frozenset(), large_bytes: int | None = None, large_slots: int = 4):
        self.app, self.max_bytes, self.route_limits, self.streamed = app, max_bytes, route_limits or {}, streamed
        # A parsed JSON body takes several times its size: bodies over `large_bytes` are read and
        # handled `large_slots` at a time, the others wait (their bytes unread), so memory stays bounded.
        self.large_bytes, self.large_slots = large_bytes, large_slots
        self.slots: asyncio.Semaphore | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        route = (scope["method"], scope["path"].rstrip("/"))
        if route in self.streamed and is_multipart(scope):
            return await self.app(scope, receive, send)
        limit = min(self.route_limits.get(route, self.max_bytes), self.max_bytes)
        too_large = f"request body is larger than {limit} bytes"
        declared = header(scope, b"content-length")
        if declared is not None:
            if not declared.isdigit():
                return await send_json(send, 400, "invalid Content-Length header")
            if int(declared) > limit:
                return await send_json(send, 413, too_large)
        received, started, holding = 0, False, False
        if self.large_bytes is not None and self.slots is None:
            self.slots = asyncio.Semaphore(self.large_slots)

        async def take_slot() -> None:
            nonlocal holding
            if self.slots is not None and not holding:
                await self.slots.acquire()
                holding = True

        async def counted_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:  # a chunked body, or one longer than it said
                    raise HTTPException(413, too_large)
                if self.large_bytes is not None and received > self.large_bytes:
                    await take_slot()
            return message

        async def watched_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            if self.large_bytes is not None and declared is not None and int(declared) > self.large_bytes:
                await take_slot()
            await self.app(scope, counted_receive, watched_send)
        except HTTPException as exc:
            if exc.status_code != 413 or started:
                raise
            await send_json(send, 413, too_large)
        finally:
            if holding:
                self.slots.release()


_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')  # brackets inside strings do not nest
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


def json_depth(raw: bytes, chunk: int = 1 << 22) -> int:
    """The deepest nesting of arrays/objects in a JSON text, without parsing it (C-speed regex and
    numpy; memory a few times `chunk`)."""
    brackets = _JSON_STRING.sub(b"", raw).translate(None, _NOT_BRACKETS)
    depth, deepest = 0, 0
    for start in range(0, len(brackets), chunk):
        part = np.frombuffer(brackets, dtype=np.uint8, count=min(chunk, len(brackets) - start), offset=start)
        running = depth + np.cumsum(np.where((part == ord("[")) | (part == ord("{")), 1, -1), dtype=np.int64)
        deepest, depth = max(deepest, int(running.max())), int(running[-1])
    return deepest


class JsonDepthLimit:
    """422 for a JSON body nested deeper than `max_depth`, before any parser recurses into it
    (Python's json raises RecursionError at ~1000 levels; pydantic and the JSON columns sooner)."""

    def __init__(self, app: ASGIApp, max_depth: int):
        self.app, self.max_depth = app, max_depth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # Every body but multipart: FastAPI parses a body without a content type as JSON, too.
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH") or is_multipart(scope):
            return await self.app(scope, receive, send)
        messages, body = [], bytearray()
        while True:  # the outer BodySizeLimit bounds what is buffered here
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break
            body += message.get("body", b"")
            if not message.get("more_body", False):
                break
        if json_depth(bytes(body)) > self.max_depth:
            return await send_json(send, 422, f"JSON body is nested deeper than {self.max_depth} levels")
        replay = iter([{"type": "http.request", "body": bytes(body), "more_body": False},
                       *(m for m in messages if m["type"] != "http.request")])

        async def replayed() -> Message:
            return next(replay, None) or await receive()

        await self.app(scope, replayed, send)


class TokenBuckets:
    """`rate` requests a second per identity, bursts up to `burst`; in memory, for one API process.
    The least recently seen identities are forgotten beyond `max_identities`."""

    def __init__(self, rate: float, burst: int, max_identities: int = 10_000):
        self.rate, self.burst, self.max_identities = rate, burst, max_identities
        self.buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # identity -> (tokens, at)
        self.lock = threading.Lock()

    def _tokens(self, identity: str, now: float) -> float:
        tokens, at = self.buckets.pop(identity, (float(self.burst), now))
        return min(float(self.burst), tokens + (now - at) * self.rate)

    def take(self, identity: str, now: float | None = None) -> float:
        """0 when the request may go ahead, else the seconds until a token is available."""
        now = time.monotonic() if now is None else now
        with self.lock:
            tokens = self._tokens(identity, now)
            wait = 0.0 if tokens >= 1 else (1 - tokens) / self.rate
            self.buckets[identity] = (tokens - 1 if wait == 0 else tokens, now)
            while len(self.buckets) > self.max_identities:  # forget the least recently seen
                self.buckets.popitem(last=False)
        return wait

    def wait(self, identity: str, now: float | None = None) -> float:
        """What `take` would answer, without taking a token."""
        now = time.monotonic() if now is None else now
        with self.lock:
            if identity not in self.buckets:
                return 0.0
            tokens = self._tokens(identity, now)
            self.buckets[identity] = (tokens, now)
        return 0.0 if tokens >= 1 else (1 - tokens) / self.rate


def presented_key(scope: Scope) -> str | None:
    """The API key in `Authorization: Bearer` or `X-API-Key`, as the auth dependency reads it."""
    auth = (header(scope, b"authorization") or b"").decode("latin-1")
    key = auth[7:].strip() if auth[:7].lower() == "bearer " else (header(scope, b"x-api-key") or b"").decode("latin-1")
    return key or None


def key_digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()


def address(scope: Scope) -> str:
    client = scope.get("client")
    return client[0] if client else "unknown"


class Callers:
    """Who may make requests: a bucket per verified API key, one per client address for everything
    else (no key, an unknown key, auth off), and a failed-authentication budget per address. A
    random key per request therefore shares its address's bucket and cannot evict real ones."""

    def __init__(self, rate: float, burst: int, failed_per_minute: float, failed_burst: int,
                 verified_ttl: float = 300.0, max_identities: int = 10_000):
        self.keys = TokenBuckets(rate, burst, max_identities) if rate > 0 else None  # None: no limit
        self.addresses = TokenBuckets(rate, burst, max_identities) if rate > 0 else None
        self.failures = (TokenBuckets(failed_per_minute / 60.0, failed_burst, max_identities)
                         if failed_per_minute > 0 else None)
        self.verified: OrderedDict[str, float] = OrderedDict()  # key digest -> when it last authenticated
        self.verified_ttl, self.max_identities = verified_ttl, max_identities
        self.lock = threading.Lock()

    def mark_verified(self, key: str) -> None:
        with self.lock:
            self.verified.pop(key_digest(key), None)
            self.verified[key_digest(key)] = time.monotonic()
            while len(self.verified) > self.max_identities:
                self.verified.popitem(last=False)

    def mark_failed(self, key: str | None, client: str) -> None:
        if key:
            with self.lock:
                self.verified.pop(key_digest(key), None)
        if self.failures is not None:
            self.failures.take(client)

    def failed_wait(self, client: str) -> float:
        return self.failures.wait(client) if self.failures is not None else 0.0

    def is_verified(self, digest: str) -> bool:
        with self.lock:
            at = self.verified.get(digest)
            return at is not None and time.monotonic() - at < self.verified_ttl


class RateLimit:
    def __init__(self, app: ASGIApp, callers: Callers, exempt_paths: set[str] = frozenset()):
        self.app, self.callers, self.exempt_paths = app, callers, exempt_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.exempt_paths:
            return await self.app(scope, receive, send)
        key, client = presented_key(scope), address(scope)
        digest = key_digest(key) if key else None
        if digest and self.callers.is_verified(digest):
            buckets, identity = self.callers.keys, digest
        else:
            if key and (failed := self.callers.failed_wait(client)) > 0:  # refused before the key is looked up
                return await send_json(send, 429, "too many failed authentications from this address; retry later",
                                       {"Retry-After": str(max(1, math.ceil(failed)))})
            buckets, identity = self.callers.addresses, client
        wait = buckets.take(identity) if buckets is not None else 0.0
        if wait > 0:
            return await send_json(send, 429, "rate limit exceeded; retry later",
                                   {"Retry-After": str(max(1, math.ceil(wait)))})
        await self.app(scope, receive, send)
