"""The service's edge (in process): the JSON nesting check costs linear time and runs after the key
check, JSON routes take only JSON, the launch token and the allowed Host names guard the auth-off
default, a failed-auth limit never refuses a key that verifies, and every answer carries the
security headers, /docs included (served from local files)."""
from __future__ import annotations

import random
import re
import time

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.edge import host_name
from api.limits import json_depth
from jobs.db import session_scope
from jobs.keys import create_key

QUICK = 2.0


def escaped_quotes(size: int) -> bytes:
    """The reproduction: an unterminated string of escaped quotes, `"` then `\\"` repeated."""
    return b'"' + b'\\"' * ((size - 1) // 2)


def timed(call):
    started = time.monotonic()
    response = call()
    return response, time.monotonic() - started


def reference_depth(raw: bytes) -> tuple[int, bool]:
    """A JSON tokenizer's view, byte by byte: (deepest nesting, whether the text stayed tokenizable)."""
    depth = deepest = 0
    inside = escaped = False
    for c in raw.decode("latin-1"):
        if inside:
            escaped, inside = (False, True) if escaped else (c == "\\", c != '"')
        elif c == "\\":
            return deepest, False  # a parser stops here: nothing after it is nested into
        elif c == '"':
            inside = True
        elif c in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif c in "]}":
            depth -= 1
    return deepest, True


def test_json_depth_agrees_with_a_tokenizer_across_chunk_boundaries():
    rng = random.Random(0)
    for _ in range(400):
        raw = bytes(rng.choice(b'[]{}"\\ax') for _ in range(rng.randint(1, 50)))
        expected, exact = reference_depth(raw)
        for chunk in (1, 3, 1 << 20):
            got = json_depth(raw, chunk)
            assert got == expected if exact else got >= expected, (raw, chunk)
    assert json_depth(b'{"a": "[[[\\"]]]", "b": [[1]]}') == 3
    assert json_depth(b'"\\\\"' + b"[" * 40) == 40  # an escaped backslash does not escape the quote


@pytest.mark.parametrize("size", [48_000, 4 << 20, 16 << 20])
def test_escaped_quote_bodies_cost_linear_time(size):
    started = time.monotonic()
    assert json_depth(escaped_quotes(size)) == 0
    assert time.monotonic() - started < QUICK  # quadratic before: 5-7 s at 48 KB, hours at 16 MiB


@pytest.mark.parametrize("size", [48_000, 4 << 20])
def test_escaped_quote_bodies_are_refused_quickly(sqlite_service, size):
    body = escaped_quotes(size)
    with TestClient(create_app(sqlite_service)) as api:
        for path in ("/v1/jobs", "/v1/embeddings"):
            response, seconds = timed(lambda: api.post(path, content=body, headers={"content-type": "application/json"}))
            assert response.status_code in (413, 422), response.text
            assert seconds < QUICK, (path, seconds)
        # unknown paths answer 404 with the body unread; so do wrong methods (405)
        response, seconds = timed(lambda: api.post("/v1/nowhere", content=body, headers={"content-type": "application/json"}))
        assert response.status_code == 404 and seconds < QUICK
        assert api.put("/v1/jobs", content=body, headers={"content-type": "application/json"}).status_code == 405


def test_the_key_is_checked_before_the_body_is_read(sqlite_service):
    """With auth on, a body for a route that needs a key is not read, scanned or parsed before the key."""
    app = create_app(sqlite_service.model_copy(update={"auth": True}))  # migrates the database
    with session_scope(sqlite_service.database_url) as session:
        _, key = create_key(session, "p")
    body = escaped_quotes(12 << 20)
    with TestClient(app) as api:
        response, seconds = timed(lambda: api.post("/v1/embeddings", content=body,
                                                   headers={"content-type": "application/json"}))
        assert response.status_code == 401 and seconds < QUICK
        deep = b'{"a": ' + b"[" * 100 + b"]" * 100 + b"}"
        assert api.post("/v1/jobs", content=deep, headers={"content-type": "application/json"}).status_code == 401
        refused = api.post("/v1/jobs", content=deep, headers={"content-type": "application/json",
                                                              "authorization": f"Bearer {key}"})
        assert refused.status_code == 422 and "nested deeper than 32" in refused.json()["detail"]
        assert api.get("/v1/methods").status_code == 200  # the method registry stays public, as before


def test_json_routes_take_only_json(sqlite_service):
    """A page can POST text/plain (or an untyped blob) cross-origin without a preflight: refused, unparsed."""
    registration = b'{"builtin": "digits"}'
    with TestClient(create_app(sqlite_service)) as api:
        for headers in ({"content-type": "text/plain"}, {"content-type": "application/x-www-form-urlencoded"}, {}):
            refused = api.post("/v1/datasets", content=registration, headers=headers)
            assert refused.status_code == 415, (headers, refused.text)
            assert "Content-Type: application/json" in refused.json()["detail"]
        assert api.get("/v1/datasets").json()["data"] == []
        multipart = api.post("/v1/jobs", files={"file": ("spec.json", b"{}")})
        assert multipart.status_code == 415 and "not multipart" in multipart.json()["detail"]
        assert api.post("/v1/datasets", content=registration,
                        headers={"content-type": "application/json; charset=utf-8"}).status_code == 201
        assert api.post("/v1/jobs/job_none/cancel").status_code == 404  # no body: no type needed


def test_the_launch_token_guards_v1_when_auth_is_off(sqlite_service):
    with TestClient(create_app(sqlite_service.model_copy(update={"launch_token": "s3cret-token"})),
                    base_url="http://127.0.0.1:8000") as api:
        refused = api.get("/v1/jobs")
        assert refused.status_code == 401 and "launch-token" in refused.json()["detail"]
        assert api.get("/v1/jobs", headers={"authorization": "Bearer wrong"}).status_code == 401
        assert api.get("/v1/jobs", headers={"authorization": "Bearer s3cret-token"}).status_code == 200
        assert api.get("/v1/jobs", headers={"x-api-key": "s3cret-token"}).status_code == 200
        assert api.post("/v1/datasets", json={"builtin": "digits"}).status_code == 401
        for open_path in ("/healthz", "/readyz", "/", "/static/app.js"):
            assert api.get(open_path).status_code == 200, open_path
    with TestClient(create_app(sqlite_service)) as api:  # an app built in process asks for none unless told
        assert api.get("/v1/jobs").status_code == 200


def test_the_localhost_default_answers_only_its_own_host_names(sqlite_service):
    """DNS rebinding: a page on evil.example resolving to 127.0.0.1 sends Host: evil.example."""
    app = create_app(sqlite_service.model_copy(update={"launch_token": "t", "allowed_hosts": "dm.internal"}))
    token = {"authorization": "Bearer t"}
    with TestClient(app, base_url="http://127.0.0.1:8000") as api:
        for host in ("localhost:8000", "127.0.0.1", "[::1]:8000", "dm.internal:443", "LOCALHOST"):
            assert api.get("/v1/jobs", headers={**token, "host": host}).status_code == 200, host
        for host in ("evil.example", "evil.example:8000", "127.0.0.1.evil.example", ""):
            refused = api.get("/v1/jobs", headers={**token, "host": host})
            assert refused.status_code == 400 and "DARKMATTER_ALLOWED_HOSTS" in refused.json()["detail"], host
        assert api.get("/healthz", headers={"host": "evil.example"}).status_code == 200  # probes answer any Host
    assert host_name(b"[::1]:8000") == "::1" and host_name(b"Example.org:80") == "example.org"


def test_bad_keys_from_an_address_never_lock_out_a_key_that_verifies(service):
    """The reproduction: 25 bad keys from one address, then another project's valid key from it."""
    with session_scope(service.database_url) as session:
        _, valid = create_key(session, "other-team")
    app = create_app(service.model_copy(update={"auth": True}))
    with TestClient(app, client=("10.0.0.7", 1)) as shared_proxy:
        codes = [shared_proxy.get("/v1/jobs", headers={"x-api-key": f"dm_guess{i}"}).status_code for i in range(25)]
        assert codes[:20] == [401] * 20 and set(codes[20:]) == {429}, codes  # guessing is still throttled
        response, seconds = timed(lambda: shared_proxy.get("/v1/jobs", headers={"x-api-key": valid}))
        assert response.status_code == 200 and seconds < QUICK
        assert shared_proxy.get("/v1/jobs", headers={"x-api-key": "dm_guess-again"}).status_code == 429
        assert shared_proxy.get("/v1/jobs", headers={"x-api-key": valid}).status_code == 200


def test_every_answer_carries_the_security_headers(sqlite_service):
    with TestClient(create_app(sqlite_service)) as api:
        for path in ("/", "/static/app.js", "/v1/jobs", "/healthz", "/v1/nowhere"):
            headers = api.get(path).headers
            assert headers["x-content-type-options"] == "nosniff", path
            assert headers["x-frame-options"] == "DENY" and headers["referrer-policy"] == "no-referrer"
            csp = headers["content-security-policy"]
            assert "frame-ancestors 'none'" in csp and "script-src 'self';" in csp and "unsafe-inline" not in csp
        assert api.post("/v1/jobs", content=b"x", headers={"content-type": "text/plain"}).headers[
            "x-frame-options"] == "DENY"


def test_docs_load_swagger_ui_from_local_files(sqlite_service):
    with TestClient(create_app(sqlite_service)) as api:
        page = api.get("/docs")
        assert page.status_code == 200
        sources = re.findall(r'(?:src|href)="([^"]+)"', page.text)
        assert sources and all(s.startswith("/static/swagger/") for s in sources), sources
        for source in sources:
            assert api.get(source).status_code == 200, source
        csp = page.headers["content-security-policy"]
        assert re.search(r"script-src 'self' 'sha256-[A-Za-z0-9+/=]+'", csp) and "frame-ancestors 'none'" in csp
        assert api.get("/redoc").status_code == 404  # it would load from a CDN
        assert api.get("/openapi.json").json()["info"]["title"] == "darkmatter"
