"""Hostile requests answer a clear 4xx quickly, before anything large is parsed, expanded, built
or looked up: nested JSON, huge bodies, brace bombs, huge models, random keys, foreign sources,
and a concurrent replay of one Idempotency-Key."""
from __future__ import annotations

import secrets
import threading
import time

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event

from api.app import create_app
from jobs.db import get_engine, session_scope
from jobs.keys import create_key
from tests.conftest import TINY_PRETRAIN

QUICK = 2.0  # seconds: every refusal comes well within this on two shared cores


def client(settings, address: str = "10.0.0.1", **changes) -> TestClient:
    return TestClient(create_app(settings.model_copy(update=changes)), client=(address, 40000))


@pytest.fixture(autouse=True, scope="module")
def warm(tmp_path_factory):
    """One submit first, so that timings measure refusals, not the process's one-time imports
    (the method registry, torch's lazily imported modules: ~3 s on two shared cores)."""
    from tests.conftest import make_settings

    settings, _ = make_settings("sqlite", tmp_path_factory.mktemp("warm") / "home")
    with TestClient(create_app(settings)) as api:
        assert api.post("/v1/jobs", json=TINY_PRETRAIN).status_code == 201


def timed(call):
    started = time.monotonic()
    response = call()
    return response, time.monotonic() - started


def nested(depth: int) -> bytes:
    return b'{"method": "simclr", "dataset": "digits", "backbone_options": {"a": ' + b"[" * depth + b"]" * depth + b"}}"


@pytest.mark.parametrize("path", ["/v1/jobs", "/v1/datasets", "/v1/embeddings", "/v1/neighbors"])
@pytest.mark.parametrize("depth", [40, 5_000, 500_000])
def test_deeply_nested_json_is_422_before_parsing(sqlite_service, path, depth):
    with client(sqlite_service) as api:
        for content_type in ({"content-type": "application/json"}, {}):  # FastAPI parses an untyped body too
            response, seconds = timed(lambda: api.post(path, content=nested(depth), headers=content_type))
            assert response.status_code == 422, response.text
            assert "nested deeper than 32 levels" in response.json()["detail"]
            assert seconds < QUICK, seconds


def test_nesting_within_the_limit_is_validated_normally(sqlite_service):
    with client(sqlite_service) as api:
        response = api.post("/v1/jobs", json={**TINY_PRETRAIN, "backbone_options": {"width": [[[8]]]}})
        assert response.status_code == 422 and "width must be an integer" in response.text


def test_huge_json_dataset_body_is_413_declared_or_chunked(sqlite_service):
    huge = b'{"uri": "' + b"a" * (8 << 20) + b'", "format": "zip"}'
    with client(sqlite_service) as api:
        response, seconds = timed(lambda: api.post("/v1/datasets", content=huge,
                                                   headers={"content-type": "application/json"}))
        assert response.status_code == 413 and "larger than 1048576 bytes" in response.json()["detail"]
        assert seconds < QUICK

        def chunks():
            for start in range(0, len(huge), 1 << 16):
                yield huge[start:start + (1 << 16)]

        response, seconds = timed(lambda: api.post("/v1/datasets", content=chunks(),
                                                   headers={"content-type": "application/json"}))
        assert response.status_code == 413 and seconds < QUICK
        assert api.get("/v1/datasets").json()["data"] == []


@pytest.mark.parametrize("uri", ["s3://data/{0..99999}{0..99999}.tar", "s3://data/{0..9}{0..9}{0..9}{0..9}{0..9}{0..9}.tar",
                                 ["s3://data/{0..99999}.tar", "s3://data/{0..99999}.tar"]])
def test_brace_bombs_are_refused_before_expansion(sqlite_service, uri):
    with client(sqlite_service) as api:
        response, seconds = timed(lambda: api.post("/v1/datasets", json={"uri": uri, "format": "webdataset"}))
        assert response.status_code == 422, response.text
        assert "at most 100,000 (DARKMATTER_MAX_SHARDS)" in response.json()["detail"]
        assert seconds < QUICK
        fine = api.post("/v1/datasets", json={"uri": "s3://data/shard-{000..009}.tar", "format": "webdataset"})
        assert fine.status_code == 201, fine.text


@pytest.mark.parametrize("change, message", [
    ({"backbone_options": {"depth": 100_000_000}}, "unknown backbone_options for small_cnn: depth"),
    ({"backbone_options": {"width": 100_000_000}}, "width must be an integer from 1 to 1024"),
    ({"backbone": "vit_tiny", "backbone_options": {"depth": 100_000_000}}, "depth must be an integer from 1 to 64"),
    ({"backbone": "vit_tiny", "backbone_options": {"dim": 4096, "depth": 64, "heads": 64}},
     "would have about 12,"),
    ({"backbone": "resnet18", "backbone_options": {"small_stem": "yes"}}, "small_stem must be true or false"),
    ({"method": "barlow_twins", "method_options": {"proj_hidden_dim": 100_000, "proj_dim": 100_000}},
     "parameters and buffers; at most"),
    ({"method_options": {"proj_hidden_dim": 100_000_000, "proj_dim": 16}}, "proj_hidden_dim must be an integer from"),
    ({"method": "mae", "backbone": "vit_tiny", "method_options": {"decoder_depth": 100_000_000}},
     "decoder_depth must be an integer from 0 to 64"),
    ({"method": "ijepa", "backbone": "vit_tiny", "method_options": {"predictor_depth": 20_000}},
     "predictor_depth must be an integer from 0 to 64"),
    ({"method": "deepcluster_v2", "method_options": {"num_heads": 10**9}}, "num_heads must be an integer from 0 to 64"),
    ({"augment": {"crops": [{"count": 100_000_000, "size": 1.0}]}}, "100,000,000 views per image; at most 64"),
    ({"backbone": "vit_small", "backbone_options": {"patch_size": 1}, "image_size": 1024},
     "1,048,576 patches per 1024-px image"),
])
def test_huge_or_unknown_backbone_options_are_422_before_building(sqlite_service, change, message):
    with client(sqlite_service) as api:
        response, seconds = timed(lambda: api.post("/v1/jobs", json={**TINY_PRETRAIN, **change}))
        assert response.status_code == 422, response.text
        assert message in str(response.json()["detail"])
        assert seconds < QUICK, seconds
        random_init = {"kind": "evaluate", "checkpoint": "random-init", "dataset": "digits", "backbone": "vit_tiny",
                       "backbone_options": {"depth": 100_000_000}}
        assert api.post("/v1/jobs", json=random_init).status_code == 422
        assert api.get("/v1/jobs").json()["total"] == 0


def count_key_lookups(settings) -> list[int]:
    counter = [0]

    @event.listens_for(get_engine(settings.database_url), "before_cursor_execute")
    def count(conn, cursor, statement, *args):
        if "FROM api_keys" in statement:
            counter[0] += 1

    return counter


def test_random_keys_get_no_buckets_and_429_once_their_address_spent_its_budget(service):
    with session_scope(service.database_url) as session:
        _, real = create_key(session, "real")
    lookups = count_key_lookups(service)
    limits = dict(auth=True, rate_limit_per_second=1.0, rate_limit_burst=1000, failed_auth_per_minute=6,
                  failed_auth_burst=5)
    app = create_app(service.model_copy(update=limits))
    with TestClient(app, client=("10.0.0.1", 1)) as attacker, TestClient(app, client=("10.0.0.2", 1)) as user:
        assert user.get("/v1/jobs", headers={"X-API-Key": real}).status_code == 200  # verified from now on
        codes, slowest = [], 0.0
        for _ in range(200):
            response, seconds = timed(lambda: attacker.get("/v1/jobs", headers={"X-API-Key": secrets.token_hex(16)}))
            codes.append(response.status_code)
            slowest = max(slowest, seconds)
        assert codes[:5] == [401] * 5 and set(codes[5:]) == {429}, codes
        assert "failed authentications" in response.json()["detail"] and int(response.headers["retry-after"]) >= 1
        assert slowest < QUICK
        # Each key is looked up (two at a time from a spent address): one of them could be valid.
        assert lookups[0] == 1 + 200
        assert user.get("/v1/jobs", headers={"X-API-Key": real}).status_code == 200
        assert len(app.state.callers.keys.buckets) == 1  # the real key's: random keys got none of their own
        assert attacker.get("/v1/jobs", headers={"X-API-Key": secrets.token_hex(16)}).status_code == 429
        assert attacker.get("/v1/jobs", headers={"X-API-Key": real}).status_code == 200  # a verified key still works


def test_a_disabled_key_is_refused_and_revocation_is_per_project(service):
    with session_scope(service.database_url) as session:
        _, key_a = create_key(session, "a")
        _, key_a2 = create_key(session, "a", "ci")
        _, key_b = create_key(session, "b")
    with client(service, auth=True) as api:
        keys_a = api.get("/v1/keys", headers={"X-API-Key": key_a}).json()["data"]
        assert [k["name"] for k in keys_a] == ["", "ci"] and key_a2 not in str(keys_a)
        ci = keys_a[1]["id"]
        assert api.post(f"/v1/keys/{ci}/disable", headers={"X-API-Key": key_b}).status_code == 404
        assert api.post(f"/v1/keys/{key_a2}/disable", headers={"X-API-Key": key_a}).status_code == 422
        assert api.get("/v1/jobs", headers={"X-API-Key": key_a2}).status_code == 200
        disabled = api.post(f"/v1/keys/{ci}/disable", headers={"X-API-Key": key_a})
        assert disabled.status_code == 200 and disabled.json()["disabled"] is True
        refused = api.get("/v1/jobs", headers={"X-API-Key": key_a2})
        assert refused.status_code == 401 and "disabled" in refused.json()["detail"]
        assert api.get("/v1/jobs", headers={"X-API-Key": key_a}).status_code == 200


def test_disable_key_from_the_command_line(service, capsys):
    from api.__main__ import main

    with session_scope(service.database_url) as session:
        _, key = create_key(session, "cli")
    env = {"DARKMATTER_HOME": str(service.home), "DARKMATTER_DATABASE_URL": service.database_url}
    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        with pytest.raises(SystemExit) as missing:
            main(["disable-key", "key_missing"])
        assert missing.value.code == 1
        main(["disable-key", key])
    assert "disabled key_" in capsys.readouterr().out
    with client(service, auth=True) as api:
        assert api.get("/v1/jobs", headers={"X-API-Key": key}).status_code == 401


@pytest.fixture
def sources(service, tmp_path):
    """Projects a and b, each with its own S3 prefix and local folder; a link in a's folder to b's."""
    roots = {name: tmp_path / f"data-{name}" for name in ("a", "b")}
    for name, root in roots.items():
        root.mkdir()
        (root / "set.zip").write_bytes(b"PK")
    (roots["a"] / "to-b").symlink_to(roots["b"])
    with session_scope(service.database_url) as session:
        keys = {name: create_key(session, name)[1] for name in ("a", "b")}
    settings = {"a": ["s3://data/a/", str(roots["a"])], "b": ["s3://data/b", str(roots["b"])]}
    return keys, roots, settings


def test_datasets_come_only_from_the_projects_own_sources(service, sources):
    keys, roots, allowed = sources
    with client(service, auth=True, dataset_sources=allowed) as api:
        def register(key: str, uri) -> object:
            fmt = "webdataset" if isinstance(uri, list) or "{" in uri else "zip"
            return api.post("/v1/datasets", json={"uri": uri, "format": fmt}, headers={"X-API-Key": keys[key]})

        assert register("a", "s3://data/a/set.zip").status_code == 201
        assert register("a", str(roots["a"] / "set.zip")).status_code == 201
        assert register("b", "s3://data/b/x/set.zip").status_code == 201
        for who, uri in [("b", "s3://data/a/set.zip"), ("a", "s3://data/b/set.zip"), ("a", "s3://data/ab/set.zip"),
                         ("a", "s3://data/a/../b/set.zip"), ("a", "s3://other/a/set.zip"),
                         ("a", str(roots["b"] / "set.zip")), ("a", str(roots["a"] / "to-b" / "set.zip")),
                         ("a", str(roots["a"] / ".." / "data-b" / "set.zip")),
                         ("a", ["s3://data/a/1.tar", "s3://data/b/2.tar"]), ("a", "s3://data/{a,b}/{0..3}.tar")]:
            response, seconds = timed(lambda: register(who, uri))
            assert response.status_code == 422, (who, uri, response.text)
            assert seconds < QUICK
            detail = response.json()["detail"]
            assert "not under an allowed data root or source of this project" in detail or "not an s3://" in detail
        stored = [d["uri"] for d in api.get("/v1/datasets", headers={"X-API-Key": keys["a"]}).json()["data"]]
        assert stored == ["s3://data/a/set.zip", str((roots["a"] / "set.zip").resolve())]


def test_data_roots_belong_to_the_default_project_only(service, sources, tmp_path):
    keys, roots, _ = sources
    with client(service, auth=True, data_roots=str(roots["a"])) as api:
        response = api.post("/v1/datasets", json={"uri": str(roots["a"] / "set.zip"), "format": "zip"},
                            headers={"X-API-Key": keys["b"]})
        assert response.status_code == 422
        response = api.post("/v1/datasets", json={"uri": "s3://data/a/set.zip", "format": "zip"},
                            headers={"X-API-Key": keys["b"]})
        assert response.status_code == 422  # with auth on, S3 needs an allowlist entry too
    with client(service, data_roots=str(roots["a"])) as api:  # a single-user service (auth off)
        assert api.post("/v1/datasets", json={"uri": str(roots["a"] / "set.zip"), "format": "zip"}).status_code == 201
        linked = api.post("/v1/datasets", json={"uri": str(roots["a"] / "to-b" / "set.zip"), "format": "zip"})
        assert linked.status_code == 422


def test_concurrent_submits_with_one_idempotency_key_make_one_job(service, monkeypatch):
    """Both requests pass the Idempotency-Key lookup before either inserts (a barrier holds them);
    the loser's insert hits the unique index and answers the winner's job with 200, not 500."""
    import jobs.submit

    barrier = threading.Barrier(2, timeout=20)
    check = jobs.submit.check_pretrain

    def held(*args, **kwargs):
        barrier.wait()
        return check(*args, **kwargs)

    monkeypatch.setattr(jobs.submit, "check_pretrain", held)
    with client(service) as api:
        api.post("/v1/datasets", json={"builtin": "digits"})  # registered before the race
        responses = [None, None]

        def submit(i: int) -> None:
            responses[i] = api.post("/v1/jobs", json=TINY_PRETRAIN, headers={"Idempotency-Key": "once"})

        threads = [threading.Thread(target=submit, args=(i,)) for i in range(2)]
        started = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert time.monotonic() - started < 30
        codes = sorted(r.status_code for r in responses)
        assert codes == [200, 201], [r.text for r in responses]
        assert responses[0].json()["id"] == responses[1].json()["id"]
        assert api.get("/v1/jobs").json()["total"] == 1
        again = api.post("/v1/jobs", json=TINY_PRETRAIN, headers={"Idempotency-Key": "once"})
        assert again.status_code == 200 and again.json()["id"] == responses[0].json()["id"]


def test_builtin_registration_is_committed_before_the_answer(sqlite_service):
    with client(sqlite_service) as api:
        dataset = api.post("/v1/datasets", json={"builtin": "digits"})
        assert dataset.status_code == 201
        with session_scope(sqlite_service.database_url) as session:  # another connection sees it at once
            from jobs.tables import Dataset

            assert session.get(Dataset, dataset.json()["id"]).state == "ready"
        job = api.post("/v1/jobs", json={**TINY_PRETRAIN, "dataset": dataset.json()["id"]})
        assert job.status_code == 201, job.text


def test_metrics_need_their_token_when_auth_is_on(service):
    with session_scope(service.database_url) as session:
        _, key = create_key(session, "a")
    with client(service, auth=True) as api:
        off = api.get("/metrics", headers={"X-API-Key": key})
        assert off.status_code == 403 and "DARKMATTER_METRICS_TOKEN" in off.json()["detail"]
    with client(service, auth=True, metrics_token="scrape-me") as api:
        assert api.get("/metrics").status_code == 401
        assert api.get("/metrics", headers={"Authorization": f"Bearer {key}"}).status_code == 401
        scraped = api.get("/metrics", headers={"Authorization": "Bearer scrape-me"})
        assert scraped.status_code == 200 and "# TYPE darkmatter_jobs gauge" in scraped.text


def test_a_link_put_in_a_registered_paths_way_is_refused_by_the_worker(sqlite_service, tmp_path):
    from core.data import DatasetUnavailable
    from jobs import sources
    from jobs.storage import store_for
    from jobs.tables import Dataset

    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "set").mkdir(parents=True)
    outside.mkdir()
    (root / "set" / "d.zip").write_bytes(b"PK")
    (outside / "d.zip").write_bytes(b"secret")
    settings = sqlite_service.model_copy(update={"data_roots": str(root)})
    with client(settings) as api:
        created = api.post("/v1/datasets", json={"uri": str(root / "set" / "d.zip"), "format": "zip"})
        assert created.status_code == 201
    with session_scope(settings.database_url) as session:
        row = session.get(Dataset, created.json()["id"])
        assert sources.local_source(settings, store_for(settings), row) == root / "set" / "d.zip"
        (root / "set" / "d.zip").unlink()
        (root / "set").rmdir()
        (root / "set").symlink_to(outside)  # swapped after the API checked it
        with pytest.raises(DatasetUnavailable, match="now leads elsewhere"):
            sources.local_source(settings, store_for(settings), row)


def test_an_upload_holds_no_pooled_connection_while_its_body_streams(service):
    with session_scope(service.database_url) as session:
        _, key = create_key(session, "a")
    pool = get_engine(service.database_url).pool
    seen = []
    boundary = "b0undary"

    def body():
        yield (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"d.npz\"\r\n"
               "Content-Type: application/octet-stream\r\n\r\n").encode()
        for _ in range(20):
            seen.append(pool.checkedout())  # the request is authenticated and reading its body now
            yield b"\0" * 4096
        yield f"\r\n--{boundary}--\r\n".encode()

    with client(service, auth=True) as api:
        api.get("/v1/jobs", headers={"X-API-Key": key})
        response = api.post("/v1/datasets", content=body(), headers={
            "X-API-Key": key, "content-type": f"multipart/form-data; boundary={boundary}"})
    assert response.status_code == 422  # not a readable npz: refused after the whole body was read
    assert len(seen) == 20 and max(seen) == 0, seen


def test_large_bodies_are_handled_a_few_at_a_time():
    import asyncio

    from api.limits import BodySizeLimit

    running, peak = {"large": 0, "small": 0}, {"large": 0, "small": 0}

    async def app(scope, receive, send):
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        kind = "large" if len(body) > 1000 else "small"
        running[kind] += 1
        peak[kind] = max(peak[kind], running[kind])
        await asyncio.sleep(0.1)
        running[kind] -= 1
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    limited = BodySizeLimit(app, max_bytes=10_000, large_bytes=1000, large_slots=2)

    async def request(size: int, chunked: bool) -> int:
        headers = [] if chunked else [(b"content-length", str(size).encode())]
        chunks = [b"x" * 500] * (size // 500)
        messages = [{"type": "http.request", "body": c, "more_body": i < len(chunks) - 1} for i, c in enumerate(chunks)]
        statuses = []

        async def receive():
            return messages.pop(0)

        async def send(message):
            if message["type"] == "http.response.start":
                statuses.append(message["status"])

        await limited({"type": "http", "method": "POST", "path": "/v1/embeddings", "headers": headers}, receive, send)
        return statuses[0]

    async def main():
        return await asyncio.gather(*[request(5000, chunked=i % 2 == 0) for i in range(6)],
                                    *[request(500, chunked=False) for _ in range(6)])

    assert set(asyncio.run(main())) == {200}
    assert peak["large"] == 2 and peak["small"] >= 3, peak


def test_a_slow_sender_gives_its_large_body_slot_back():
    import asyncio

    from api.limits import BodySizeLimit

    async def app(scope, receive, send):
        while (await receive()).get("more_body"):
            pass
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    limited = BodySizeLimit(app, max_bytes=10_000, large_bytes=1000, large_slots=1, large_seconds=0.3)

    async def request(stall: bool) -> int:
        chunks = [{"type": "http.request", "body": b"x" * 600, "more_body": True}] * 2
        statuses = []

        async def receive():
            if chunks:
                return chunks.pop(0)
            if stall:
                await asyncio.sleep(60)  # a slow loris: the rest never comes
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message):
            if message["type"] == "http.response.start":
                statuses.append(message["status"])

        await limited({"type": "http", "method": "POST", "path": "/v1/embeddings", "headers": []}, receive, send)
        return statuses[0]

    async def main():
        slow = asyncio.create_task(request(stall=True))
        await asyncio.sleep(0.05)
        started = time.monotonic()
        fast = await request(stall=False)  # waits for the one slot, which the slow sender must give back
        return await slow, fast, time.monotonic() - started

    slow, fast, waited = asyncio.run(main())
    assert (slow, fast) == (408, 200) and waited < 2, (slow, fast, waited)
