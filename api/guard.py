"""What a request passes before its route runs, in this order: the route must exist (an unknown
path or method answers 404/405 with its body unread); a /v1 route needs its caller's key (or
the launch token) before any of its body is read; a body must be JSON, typed
`application/json`, and nested at most `max_depth` levels (a linear scan, off the event loop
when the body is large) before FastAPI or a route parses it."""
from __future__ import annotations

import asyncio
import math

import anyio
from fastapi.concurrency import run_in_threadpool
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.auth import Caller, Refused, key_caller, launch_caller
from api.limits import header, json_depth, send_json
from api.ratelimit import Callers, address, key_digest, presented_key
from jobs.settings import Settings

INLINE_SCAN_BYTES = 64 * 1024  # smaller bodies are scanned on the event loop: ~50 µs


def is_json(scope: Scope) -> bool:
    kind = (header(scope, b"content-type") or b"").split(b";", 1)[0].strip().lower()
    return kind == b"application/json" or (kind.startswith(b"application/") and kind.endswith(b"+json"))


class Guard:
    def __init__(self, app: ASGIApp, settings: Settings, callers: Callers, max_depth: int,
                 multipart_routes: set[tuple[str, str]] = frozenset(), public_prefixes: tuple[str, ...] = ()):
        self.app, self.settings, self.callers, self.max_depth = app, settings, callers, max_depth
        self.public_prefixes = public_prefixes  # /v1 reads that need no key (the method registry)
        self.multipart_routes = multipart_routes
        # Keys from an address whose failed-auth budget is spent are still looked up (one of them may
        # be valid), but two at a time: guessing from there cannot crowd the thread pool or the database.
        self.suspect_lookups: asyncio.Semaphore | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        state = scope.setdefault("state", {})
        try:
            path, known = scope["path"], self.known_route(scope)
            if known and (path.startswith("/v1/") or path == "/v1") and not path.startswith(self.public_prefixes):
                state["caller"] = await self.authenticate(scope)
            elif state.get("rate") == "pending":  # a key that is not checked here: its address's bucket
                self.charge(scope, address(scope), self.callers.addresses)
            if known and scope["method"] in ("POST", "PUT", "PATCH"):
                receive = await self.checked_body(scope, receive)
        except Refused as refusal:
            return await send_json(send, refusal.status, refusal.detail, refusal.headers)
        await self.app(scope, receive, send)  # an unknown path or method: 404/405, its body unread

    @staticmethod
    def known_route(scope: Scope) -> bool:
        router = scope["app"].router
        return any(route.matches(scope)[0] is not Match.NONE for route in router.routes)

    def charge(self, scope: Scope, identity: str, buckets) -> None:
        """The rate limit the outer RateLimit left to us (a key it had not seen verified)."""
        scope["state"]["rate"] = "charged"
        wait = buckets.take(identity) if buckets is not None else 0.0
        if wait > 0:
            raise Refused(429, "rate limit exceeded; retry later", {"Retry-After": str(max(1, math.ceil(wait)))})

    async def authenticate(self, scope: Scope) -> Caller:
        presented, pending = presented_key(scope), scope["state"].get("rate") == "pending"
        if not self.settings.auth:
            caller = launch_caller(self.settings, presented)
            if pending:
                self.charge(scope, address(scope), self.callers.addresses)
            return caller
        if not presented:
            raise Refused(401, "an API key is required (Authorization: Bearer <key>)", {"WWW-Authenticate": "Bearer"})
        if self.callers.failed_wait(address(scope)) > 0:
            self.suspect_lookups = self.suspect_lookups or asyncio.Semaphore(2)
            async with self.suspect_lookups:
                caller = await run_in_threadpool(key_caller, self.settings.database_url, presented)
        else:
            caller = await run_in_threadpool(key_caller, self.settings.database_url, presented)
        if caller is None:
            # Counted per address; once the budget is spent, bad keys get 429. A key that verifies is
            # never refused here, whatever its address did (a shared proxy address, a NAT).
            wait = self.callers.mark_failed(presented, address(scope))
            if wait > 0:
                raise Refused(429, "too many failed authentications from this address; retry later",
                              {"Retry-After": str(max(1, math.ceil(wait)))})
            raise Refused(401, "invalid or disabled API key", {"WWW-Authenticate": "Bearer"})
        self.callers.mark_verified(presented)
        if pending:
            self.charge(scope, key_digest(presented), self.callers.keys)
        return caller

    async def checked_body(self, scope: Scope, receive: Receive) -> Receive:
        """The body read (the outer BodySizeLimit bounds it), checked, and handed on; multipart
        bodies stream on to the routes that take them (dataset uploads count their own bytes)."""
        if (header(scope, b"content-type") or b"").lower().startswith(b"multipart/"):
            if (scope["method"], scope["path"].rstrip("/")) in self.multipart_routes:
                return receive
            raise Refused(415, "this route takes a JSON body (Content-Type: application/json), not multipart")
        messages, chunks = [], []
        while True:
            message = await receive()
            if message["type"] != "http.request":
                messages.append(message)
                break
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        raw = b"".join(chunks)
        del chunks
        if raw:
            depth = json_depth(raw) if len(raw) <= INLINE_SCAN_BYTES else await anyio.to_thread.run_sync(json_depth, raw)
            if depth > self.max_depth:
                raise Refused(422, f"JSON body is nested deeper than {self.max_depth} levels")
            if not is_json(scope):
                raise Refused(415, "send the body as JSON with Content-Type: application/json")
        replay = iter([{"type": "http.request", "body": raw, "more_body": False}, *messages])

        async def replayed() -> Message:
            return next(replay, None) or await receive()

        return replayed
