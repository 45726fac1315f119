"""The server's edge toward browsers: which Host names it answers (a web page cannot reach the
localhost server through DNS rebinding), the security headers of every answer, and /docs with
Swagger UI from local files."""
from __future__ import annotations

import base64
import hashlib
import re

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.limits import header, send_json

LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1")
# The dashboard loads only its own files and talks only to its own origin; nothing may frame it.
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; connect-src 'self'; "
       "font-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
HEADERS = [(b"x-content-type-options", b"nosniff"), (b"x-frame-options", b"DENY"),
           (b"referrer-policy", b"no-referrer"), (b"cross-origin-opener-policy", b"same-origin")]


def host_name(value: bytes) -> str:
    """The name in a Host header, without its port: `[::1]:8000` -> `::1`, `example.org:80` -> `example.org`."""
    text = value.decode("latin-1").strip().lower()
    if text.startswith("["):
        return text[1:text.find("]")] if "]" in text else text
    return text.rsplit(":", 1)[0] if text.count(":") == 1 else text


class HostCheck:
    """400 for a Host header not in `allowed` (as TrustedHostMiddleware, which cannot read an IPv6
    Host such as `[::1]:8000`); `*` allows any. Health checks answer whatever the Host."""

    def __init__(self, app: ASGIApp, allowed: list[str], exempt_paths: set[str] = frozenset()):
        self.app, self.allowed, self.exempt_paths = app, {h.strip().lower() for h in allowed if h.strip()}, exempt_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or "*" in self.allowed or scope["path"] in self.exempt_paths:
            return await self.app(scope, receive, send)
        name = host_name(header(scope, b"host") or b"")
        if name not in self.allowed:
            return await send_json(send, 400, f"this server does not answer for host {name[:100]!r}; "
                                              "add it to DARKMATTER_ALLOWED_HOSTS")
        await self.app(scope, receive, send)


class SecurityHeaders:
    """CSP (with `frame-ancestors 'none'`), nosniff, X-Frame-Options DENY and no referrer on every
    answer; `page_csp` gives some paths a policy of their own (Swagger UI's inline start-up script)."""

    def __init__(self, app: ASGIApp, page_csp: dict[str, str] | None = None):
        self.app, self.page_csp = app, page_csp or {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        csp = self.page_csp.get(scope["path"], CSP).encode()

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {name.lower() for name, _ in message.get("headers", [])}
                extra = [(n, v) for n, v in [(b"content-security-policy", csp), *HEADERS] if n not in present]
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        await self.app(scope, receive, with_headers)


def swagger_ui_path() -> str:
    from swagger_ui_bundle import swagger_ui_path as path  # the pinned Swagger UI dist files

    return str(path)


def add_docs(app: FastAPI) -> dict[str, str]:
    """/docs from /static/swagger (files of the swagger-ui-bundle package); returns its CSP, which
    allows exactly the page's inline start-up script by its hash."""
    app.mount("/static/swagger", StaticFiles(directory=swagger_ui_path()), name="swagger")
    page = get_swagger_ui_html(openapi_url=app.openapi_url, title=f"{app.title} - API docs",
                               swagger_js_url="/static/swagger/swagger-ui-bundle.js",
                               swagger_css_url="/static/swagger/swagger-ui.css",
                               swagger_favicon_url="/static/swagger/favicon-32x32.png")
    html = page.body.decode()
    hashes = " ".join(f"'sha256-{base64.b64encode(hashlib.sha256(s.encode()).digest()).decode()}'"
                      for s in re.findall(r"<script>(.*?)</script>", html, re.S))

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        return HTMLResponse(html)

    # Swagger UI sets style attributes and draws its icons from data: URLs
    return {"/docs": CSP.replace("script-src 'self'", f"script-src 'self' {hashes}")
                        .replace("style-src 'self'", "style-src 'self' 'unsafe-inline'")}
