"""The job event stream: state changes in order, metrics by step, and a resume after a dropped
connection with Last-Event-ID that neither repeats nor skips anything."""
from __future__ import annotations

import httpx

from client.sse import Decoder, Event
from tests.conftest import TINY_PRETRAIN


def read(http: httpx.Client, job_id: str, last_event_id: str | None = None, stop_after=None) -> list[Event]:
    """Read the stream until `end` (or until stop_after(event) is true: then drop the connection)."""
    headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
    events, decoder = [], Decoder()
    with http.stream("GET", f"/v1/jobs/{job_id}/events", params={"stream": "true"}, headers=headers,
                     timeout=httpx.Timeout(30, read=60)) as response:
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            event = decoder.feed(line)
            if event is None:
                continue
            events.append(event)
            if event.event == "end" or (stop_after and stop_after(event)):
                break
    return events


def test_a_client_gets_state_changes_in_order_and_resumes_with_last_event_id(live):
    with live.http() as http:
        job = http.post("/v1/jobs", json={**TINY_PRETRAIN, "dataset": live.dataset["id"], "evaluations": [],
                                          "steps": 8, "log_every": 1}).json()
        # drop the connection as soon as the job is running (mid-run: its metrics are still to come)
        first = read(http, job["id"], stop_after=lambda e: e.event == "state" and e.data["data"]["state"] == "running")
        assert first[-1].event == "state" and first[-1].data["data"]["state"] == "running"
        rest = read(http, job["id"], last_event_id=first[-1].id)
        replay = read(http, job["id"])  # the whole stream again, from the start, once the job has ended

    def key(e: Event):
        return (e.event, e.data.get("id"), e.data.get("step"), tuple(sorted(e.data.get("values", {}).items())))

    resumed = first + rest
    assert [key(e) for e in resumed] == [key(e) for e in replay]  # nothing repeated, nothing skipped
    states = [e.data["data"]["state"] for e in replay if e.event == "state"]
    assert states == ["queued", "running", "succeeded"]
    steps = [e.data["step"] for e in replay if e.event == "metrics" and "loss" in e.data["values"]]
    assert steps == list(range(1, 9))
    metrics = [e for e in replay if e.event == "metrics" and "loss" in e.data["values"]]
    assert {"loss", "lr", "img_per_s"} <= set(metrics[0].data["values"]) and metrics[-1].data["total_steps"] == 8
    assert replay[-1].event == "end" and replay[-1].data == {"state": "succeeded"}
    ids = [tuple(map(int, e.id.split("."))) for e in replay]
    assert ids == sorted(ids)  # the cursor only moves forward


def test_the_python_client_follows_the_stream(live):
    from client import Client

    with Client(live.url) as client:
        events = list(client.events(live.job["id"]))
    assert [e.data["data"]["state"] for e in events if e.event == "state"] == ["queued", "running", "succeeded"]
    assert events[-1].event == "end"
