"""Request limits as ASGI middleware: caps on body size (also for chunked bodies that carry no
Content-Length), on how many large bodies are handled at once, and on JSON nesting. They answer
JSON: 413 and 422 (the rate limits are in api/ratelimit.py)."""
from __future__ import annotations

import asyncio
import json
import time

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
                 streamed: set[tuple[str, str]] = frozenset(), large_bytes: int | None = None, large_slots: int = 4,
                 large_seconds: float = 120.0):
        self.app, self.max_bytes, self.route_limits, self.streamed = app, max_bytes, route_limits or {}, streamed
        # A parsed JSON body takes several times its size: bodies over `large_bytes` are read and
        # handled `large_slots` at a time, the others wait (their bytes unread), so memory stays bounded.
        # A slot's body must arrive within `large_seconds` (408), so slow senders cannot hold them all.
        self.large_bytes, self.large_slots, self.large_seconds = large_bytes, large_slots, large_seconds
        self.slots: asyncio.Semaphore | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        route = (scope["method"], scope["path"].rstrip("/"))
        if route in self.streamed and is_multipart(scope):
            return await self.app(scope, receive, send)
        limit = min(self.route_limits.get(route, self.max_bytes), self.max_bytes)
        too_large = f"request body is larger than {limit} bytes"
        too_slow = f"a large request body must arrive within {self.large_seconds:g} s"
        declared = header(scope, b"content-length")
        if declared is not None:
            if not declared.isdigit():
                return await send_json(send, 400, "invalid Content-Length header")
            if int(declared) > limit:
                return await send_json(send, 413, too_large)
        received, started, holding, deadline = 0, False, False, None
        if self.large_bytes is not None and self.slots is None:
            self.slots = asyncio.Semaphore(self.large_slots)

        async def take_slot() -> None:
            nonlocal holding, deadline
            if self.slots is not None and not holding:
                await self.slots.acquire()
                holding, deadline = True, time.monotonic() + self.large_seconds

        async def counted_receive() -> Message:
            nonlocal received
            if deadline is None:
                message = await receive()
            else:
                try:
                    message = await asyncio.wait_for(receive(), max(0.0, deadline - time.monotonic()))
                except asyncio.TimeoutError:
                    raise HTTPException(408, too_slow) from None
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
            if exc.status_code not in (408, 413) or started:
                raise
            await send_json(send, exc.status_code, too_large if exc.status_code == 413 else too_slow)
        finally:
            if holding:
                self.slots.release()


def json_depth(raw: bytes, chunk: int = 1 << 18) -> int:
    """The deepest nesting of arrays/objects in a JSON text, without parsing it: one linear pass
    (numpy, `chunk` bytes at a time, so memory is a few times `chunk`) that tracks, as a JSON
    tokenizer does, whether each byte is inside a string and whether a quote is escaped (preceded
    by an odd run of backslashes); brackets count only outside strings. Where the text is not
    JSON the count can only be too high, never too low, up to where a parser would stop."""
    depth = deepest = 0
    in_string, backslashes = False, 0  # carried across chunks: string state, the run of `\` ending the chunk
    for start in range(0, len(raw), chunk):
        part = np.frombuffer(raw, dtype=np.uint8, count=min(chunk, len(raw) - start), offset=start)
        index = np.arange(len(part), dtype=np.int32)
        is_backslash = part == ord("\\")
        last_other = np.maximum.accumulate(np.where(is_backslash, -1, index))  # the last non-backslash at or before i
        run = np.where(last_other < 0, index + 1 + backslashes, index - last_other)  # backslashes ending at i
        run_before = np.empty_like(run)
        run_before[0], run_before[1:] = backslashes, run[:-1]
        quotes = (part == ord('"')) & (run_before % 2 == 0)
        inside = (np.cumsum(quotes, dtype=np.int32) % 2 == 1) ^ in_string
        step = ((part == ord("[")) | (part == ord("{"))).astype(np.int8) - ((part == ord("]")) | (part == ord("}")))
        running = depth + np.cumsum(np.where(inside, 0, step), dtype=np.int64)
        deepest, depth = max(deepest, int(running.max())), int(running[-1])
        in_string, backslashes = bool(inside[-1]), int(run[-1])
    return deepest
