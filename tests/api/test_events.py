"""The job event stream (SSE): every event in order, then `end` once the job has ended; a stream
opened on a waiting job sees the change that ends it."""
from __future__ import annotations

import json
import threading

from fastapi.testclient import TestClient

from api.app import create_app
from tests.conftest import TINY_PRETRAIN


def read_stream(api: TestClient, job_id: str, out: list) -> None:
    with api.stream("GET", f"/v1/jobs/{job_id}/events", params={"stream": "true"}) as response:
        out.append(response.status_code)
        kind = None
        for line in response.iter_lines():
            if line.startswith("event: "):
                kind = line.removeprefix("event: ")
            elif line.startswith("data: "):
                out.append((kind, json.loads(line.removeprefix("data: "))))
                if kind == "end":
                    return


def test_a_stream_follows_the_job_until_it_ends(sqlite_service):
    with TestClient(create_app(sqlite_service)) as api:
        job = api.post("/v1/jobs", json=TINY_PRETRAIN).json()
        seen: list = []
        reader = threading.Thread(target=read_stream, args=(api, job["id"], seen), daemon=True)
        reader.start()
        deadline = threading.Event()
        while len(seen) < 2 and not deadline.wait(0.1):  # the stream is open and has sent the queued event
            pass
        assert api.post(f"/v1/jobs/{job['id']}/cancel").json()["state"] == "cancelled"
        reader.join(20)
        assert not reader.is_alive(), seen
        assert seen[0] == 200
        states = [data.get("data", {}).get("state") for kind, data in seen[1:] if kind == "state"]
        assert states == ["queued", "cancelled"], seen
        assert seen[-1] == ("end", {"state": "cancelled"})
        replay: list = []
        read_stream(api, job["id"], replay)  # an ended job: its events at once, then end
        assert replay[1:] == seen[1:]
        after = [e for e in seen[1:] if e[0] == "state"][0][1]["id"]
        later = api.get(f"/v1/jobs/{job['id']}/events", params={"after": after}).json()["data"]
        assert [e["data"].get("state") for e in later if e["kind"] == "state"] == ["cancelled"]


def test_event_streams_beyond_a_projects_cap_are_429(sqlite_service):
    with TestClient(create_app(sqlite_service.model_copy(update={"max_event_streams_per_project": 1}))) as api:
        job = api.post("/v1/jobs", json=TINY_PRETRAIN).json()
        first: list = []
        reader = threading.Thread(target=read_stream, args=(api, job["id"], first), daemon=True)
        reader.start()
        stop = threading.Event()
        while len(first) < 2 and not stop.wait(0.1):  # the first stream is open
            pass
        refused = api.get(f"/v1/jobs/{job['id']}/events", params={"stream": "true"})
        assert refused.status_code == 429 and "too many event streams" in refused.json()["detail"]
        assert api.get(f"/v1/jobs/{job['id']}/events").status_code == 200  # the plain list is not capped
        api.post(f"/v1/jobs/{job['id']}/cancel")
        reader.join(20)
        assert first[-1] == ("end", {"state": "cancelled"})
        replay: list = []
        read_stream(api, job["id"], replay)  # the first stream has ended: its place is free again
        assert replay[0] == 200
