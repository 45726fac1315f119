"""Token-bucket rate limits as ASGI middleware: a bucket per verified API key, one per client
address for everything else, and a budget of failed authentications per address; 429 with
Retry-After. A key not seen verified yet is left to api.guard, which charges its bucket once the
key is looked up (so a flood of bad keys from a shared address never blocks a key that verifies)."""
from __future__ import annotations

import hashlib
import math
import threading
import time
from collections import OrderedDict

from starlette.types import ASGIApp, Receive, Scope, Send

from api.limits import header, send_json


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

    def mark_failed(self, key: str | None, client: str) -> float:
        """Counts a failed authentication from `client`: 0 while its budget lasts, else the seconds
        until it refills."""
        if key:
            with self.lock:
                self.verified.pop(key_digest(key), None)
        return self.failures.take(client) if self.failures is not None else 0.0

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
        elif key:  # looked up first (api.guard): a verified key's bucket, the address's or its failures
            scope.setdefault("state", {})["rate"] = "pending"
            return await self.app(scope, receive, send)
        else:
            buckets, identity = self.callers.addresses, client
        wait = buckets.take(identity) if buckets is not None else 0.0
        if wait > 0:
            return await send_json(send, 429, "rate limit exceeded; retry later",
                                   {"Retry-After": str(max(1, math.ceil(wait)))})
        await self.app(scope, receive, send)
