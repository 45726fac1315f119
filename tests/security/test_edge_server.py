"""A real `python -m api serve` process: the escaped-quote bodies of the review (48 KB, 16 MiB) are
refused quickly with memory bounded while /healthz stays fast (its p99 is printed); the client
address comes from X-Forwarded-For only through a trusted proxy; a disabled key's open event
stream closes; and without --auth the server writes a launch token that the client picks up."""
from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import threading
import time

import httpx
import pytest

from client import Client
from client.sse import Decoder
from jobs.db import session_scope
from jobs.ids import new_id
from jobs.keys import create_key
from jobs.migrate import upgrade
from jobs.tables import Job
from tests.conftest import ROOT, make_settings, settings_env
from tests.security.test_server_under_load import free_port, memory_kib, p


def start(settings, env_changes: dict, args: list[str]) -> tuple[subprocess.Popen, str, str]:
    port = free_port()
    env = {**settings_env(settings), **env_changes}
    env.pop("DARKMATTER_AUTH", None)  # the command line says whether auth is on
    log = settings.home / f"api-{port}.log"
    proc = subprocess.Popen([sys.executable, "-m", "api", "serve", "--host", "127.0.0.1", "--port", str(port), *args],
                            env=env, cwd=ROOT, stdout=open(log, "wb"), stderr=subprocess.STDOUT,
                            start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return proc, url, log.read_text()
        except httpx.HTTPError:
            time.sleep(0.3)
    proc.kill()
    pytest.fail("the API server did not start: " + log.read_text()[-2000:])


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """`api serve --auth` behind a trusted proxy on 127.0.0.1, with an admin key, a use key and a
    queued job (no worker: its event stream never ends)."""
    settings, _ = make_settings("sqlite", tmp_path_factory.mktemp("edge") / "home")
    upgrade(settings.database_url)
    with session_scope(settings.database_url) as session:
        project, admin = create_key(session, "team", "owner")
        _, use = create_key(session, "team", "ci", scope="use")
        job = Job(id=new_id("job"), project_id=project, kind="pretrain", state="queued", spec={}, queue="default",
                  result={})
        session.add(job)
        job_id = job.id
    proc, url, _ = start(settings, {"DARKMATTER_FORWARDED_ALLOW_IPS": "127.0.0.1", "DARKMATTER_KEY_RECHECK_SECONDS": "0.5",
                                    "DARKMATTER_RATE_LIMIT_PER_SECOND": "1000", "DARKMATTER_RATE_LIMIT_BURST": "1000"},
                         ["--auth"])
    yield {"url": url, "pid": proc.pid, "admin": admin, "use": use, "job": job_id}
    stop(proc)


class HealthProbe(threading.Thread):
    """GET /healthz every 10 ms until stopped; the latencies are kept."""

    def __init__(self, url: str):
        super().__init__(daemon=True)
        self.url, self.seconds, self.done = url, [], threading.Event()

    def run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=30) as http:
            while not self.done.is_set():
                started = time.monotonic()
                assert http.get("/healthz").status_code == 200
                self.seconds.append(time.monotonic() - started)
                time.sleep(0.01)


def test_escaped_quote_bodies_are_refused_quickly_while_healthz_stays_fast(server):
    quotes = lambda size: b'"' + b'\\"' * ((size - 1) // 2)  # noqa: E731  the review's reproduction
    key = {"authorization": f"Bearer {server['admin']}", "content-type": "application/json"}
    abuses = {  # name: (path, body, headers, expected status)
        "48 KB, /v1/jobs, with a key": ("/v1/jobs", quotes(48_000), key, 422),
        "48 KB, /v1/datasets, with a key": ("/v1/datasets", quotes(48_000), key, 422),
        "48 KB, unknown path, no key": ("/v1/nowhere", quotes(48_000), {"content-type": "application/json"}, 404),
        "16 MiB, /v1/embeddings, with a key": ("/v1/embeddings", quotes(16 << 20), key, 422),
        "16 MiB, /v1/embeddings, no key": ("/v1/embeddings", quotes(16 << 20), {"content-type": "application/json"}, 401),
        "16 MiB, /v1/jobs (1 MiB cap), with a key": ("/v1/jobs", quotes(16 << 20), key, 413),
    }
    probe = HealthProbe(server["url"])
    probe.start()
    results = {}
    try:
        time.sleep(0.3)
        with httpx.Client(base_url=server["url"], timeout=60) as api:
            for name, (path, body, headers, _) in abuses.items():
                before = memory_kib(server["pid"])["VmHWM"]
                started = time.monotonic()
                status = api.post(path, content=body, headers=headers).status_code
                results[name] = {"status": status, "seconds": round(time.monotonic() - started, 3),
                                 "peak_growth_mib": round((memory_kib(server["pid"])["VmHWM"] - before) / 1024, 1)}
        time.sleep(0.3)
    finally:
        probe.done.set()
        probe.join()
    health = {"healthz_p50_ms": round(p(probe.seconds, 50) * 1000, 1), "healthz_p99_ms": round(p(probe.seconds, 99) * 1000, 1),
              "healthz_max_ms": round(max(probe.seconds) * 1000, 1), "probes": len(probe.seconds)}
    print("\nescaped-quote bodies:", json.dumps(results), "\n/healthz meanwhile:", json.dumps(health))
    for name, (_, _, _, expected) in abuses.items():
        assert results[name]["status"] == expected, (name, results[name])
        # linear: a 16 MiB body is read and scanned in about a second (it took hours); 48 KB in milliseconds
        assert results[name]["seconds"] < (6.0 if "16 MiB" in name else 1.0), (name, results[name])
        assert results[name]["peak_growth_mib"] < 100, (name, results[name])
    assert health["healthz_p99_ms"] < 500, health


def test_the_client_address_comes_from_a_trusted_proxy(server):
    """uvicorn believes X-Forwarded-For from 127.0.0.1 (DARKMATTER_FORWARDED_ALLOW_IPS): bad keys
    count against the forwarded address, so one client's guessing does not throttle another's."""
    with httpx.Client(base_url=server["url"], timeout=30) as api:
        guesser = {"x-forwarded-for": "203.0.113.1", "x-api-key": "dm_guess"}
        codes = [api.get("/v1/jobs", headers=guesser).status_code for _ in range(22)]
        assert codes[:20] == [401] * 20 and codes[20:] == [429, 429], codes
        other = api.get("/v1/jobs", headers={"x-forwarded-for": "203.0.113.2", "x-api-key": "dm_typo"})
        assert other.status_code == 401  # another address behind the same proxy: its own budget
        valid = api.get("/v1/jobs", headers={"x-forwarded-for": "203.0.113.1", "x-api-key": server["admin"]})
        assert valid.status_code == 200  # a key that verifies passes, whatever its address did


def test_a_disabled_keys_open_event_stream_closes(server):
    with httpx.Client(base_url=server["url"], timeout=httpx.Timeout(30, read=30)) as api:
        use, admin = {"authorization": f"Bearer {server['use']}"}, {"authorization": f"Bearer {server['admin']}"}
        use_id = next(k["id"] for k in api.get("/v1/keys", headers=admin).json()["data"] if k["name"] == "ci")
        decoder, events = Decoder(), []
        with api.stream("GET", f"/v1/jobs/{server['job']}/events", params={"stream": "true"}, headers=use) as stream:
            assert stream.status_code == 200
            assert api.post(f"/v1/keys/{use_id}/disable", headers=admin).status_code == 200
            disabled_at = time.monotonic()
            for line in stream.iter_lines():  # ends when the server closes the stream
                event = decoder.feed(line)
                if event is not None:
                    events.append(event)
            closed_after = time.monotonic() - disabled_at
        print(f"\nstream closed {closed_after:.2f} s after its key was disabled")
        assert events and events[-1].event == "error" and "disabled or deleted" in events[-1].data["detail"]
        assert closed_after < 5.0
        assert api.get(f"/v1/jobs/{server['job']}/events", params={"stream": "true"}, headers=use).status_code == 401


def test_without_auth_the_server_writes_a_launch_token_the_client_reads(tmp_path, monkeypatch):
    settings, _ = make_settings("sqlite", tmp_path / "home")
    proc, url, printed = start(settings, {}, [])
    try:
        token_file = settings.home / "launch-token"
        token = token_file.read_text().strip()
        assert len(token) >= 32 and stat.S_IMODE(os.stat(token_file).st_mode) == 0o600
        assert f"{url}/?token={token}" in printed  # the dashboard URL it prints carries the token
        assert httpx.get(f"{url}/v1/jobs").status_code == 401
        assert httpx.get(f"{url}/v1/jobs", headers={"authorization": f"Bearer {token}"}).status_code == 200
        assert httpx.get(f"{url}/v1/jobs", headers={"authorization": f"Bearer {token}", "host": "evil.example"}
                         ).status_code == 400
        assert httpx.get(f"{url}/healthz").status_code == 200 and httpx.get(f"{url}/readyz").status_code == 200
        monkeypatch.delenv("DARKMATTER_TOKEN", raising=False)
        monkeypatch.setenv("DARKMATTER_HOME", str(settings.home))
        with Client(url) as client:  # reads $DARKMATTER_HOME/launch-token by itself
            assert client.jobs()["total"] == 0
        with Client(url.replace("127.0.0.1", "localhost")) as client:
            assert client.jobs()["total"] == 0
    finally:
        stop(proc)
