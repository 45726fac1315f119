"""Server-Sent Events: a line-by-line decoder shared by the sync and async clients."""
from __future__ import annotations

import json
from dataclasses import dataclass, field


@dataclass
class Event:
    """One SSE message. `data` is the decoded JSON payload; `id` the server's resume cursor."""

    event: str
    data: dict = field(default_factory=dict)
    id: str | None = None


class Decoder:
    """Feed it lines (without their newline); it returns an Event at each blank line."""

    def __init__(self):
        self.kind, self.data, self.id = "message", [], None

    def feed(self, line: str) -> Event | None:
        if not line:
            if not self.data and self.kind == "message":
                return None
            text = "\n".join(self.data)
            try:
                payload = json.loads(text) if text else {}
            except ValueError:
                payload = {"text": text}
            event = Event(self.kind, payload if isinstance(payload, dict) else {"value": payload}, self.id)
            self.kind, self.data = "message", []
            return event
        if line.startswith(":"):  # a comment (keep-alive)
            return None
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "event":
            self.kind = value
        elif name == "data":
            self.data.append(value)
        elif name == "id":
            self.id = value
        return None
