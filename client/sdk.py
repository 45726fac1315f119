"""The synchronous Python client (httpx) for the darkmatter HTTP API.

    from client import Client
    dm = Client("http://127.0.0.1:8000", api_key=None)
    job = dm.submit({"method": "simclr", "dataset": "digits", "steps": 300})
    done = dm.wait(job["id"], on_update=lambda j: print(j["step"], j["metrics"].get("loss")))
    vectors = dm.embeddings(done["result"]["checkpoint"], images)   # numpy (N, D) float32
"""
from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx

from client import transfer
from client.calls import TERMINAL, Calls, retry_wait, upload_fields
from client.errors import ApiError, ConnectionFailed, JobFailed, error_for, transport_failure
from client.sse import Decoder, Event
from client.token import local_token

__all__ = ["ApiError", "Client", "TERMINAL"]


def raise_for(response: httpx.Response) -> None:
    if response.status_code >= 400:
        try:
            detail = response.json().get("detail")
        except ValueError:
            detail = response.text[:300] or response.reason_phrase
        docs = str(response.request.url.copy_with(path="/docs", query=None, fragment=None))
        raise error_for(response.status_code, detail, response.headers, docs)


class Client(Calls):
    def __init__(self, base_url: str = "http://127.0.0.1:8000", api_key: str | None = None, timeout: float = 60,
                 retries: int = 2):
        api_key = api_key or local_token(base_url)  # a local server's launch token when no key is given
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.base_url, self.retries = base_url.rstrip("/"), retries
        self.http = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout)

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.http.close()

    def _send(self, method: str, path: str, **kwargs) -> httpx.Response:
        """One request; a refused connection is ConnectionFailed, a 429 is retried after its Retry-After."""
        for attempt in range(self.retries + 1):
            try:
                response = self.http.request(method, path, **kwargs)
            except httpx.TransportError as exc:
                raise transport_failure(self.base_url, exc, self.http.timeout.read) from None
            wait = retry_wait(response)
            if response.status_code != 429 or attempt == self.retries or wait is None:
                return response
            time.sleep(wait)
        return response

    def _call(self, method: str, path: str, **kwargs):
        response = self._send(method, path, **kwargs)
        raise_for(response)
        return response.json()

    # readiness
    def ready(self) -> bool:
        try:
            return self.http.get("/readyz").status_code == 200
        except httpx.HTTPError:
            return False

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not self.ready():
            if time.monotonic() > deadline:
                raise TimeoutError(f"API at {self.base_url} not ready after {timeout}s")
            time.sleep(0.3)

    # datasets
    def upload_dataset(self, path: str | Path, format: str | None = None, **options) -> dict:
        """Stream a dataset file (zip, tar, tar.gz, npz, idx, txt, jsonl); it is scanned on a worker.
        Options: name, image_size (square) or short_side (aspect kept), test_fraction, seed."""
        with open(path, "rb") as f:
            return self._call("POST", "/v1/datasets", files={"file": (Path(path).name, f)},
                              data=upload_fields(format, options))

    def wait_dataset(self, dataset_id: str, timeout: float = 3600, poll: float = 1.0) -> dict:
        """Until the scan ends: the row is `ready`, or `invalid` with the reason in `error`."""
        deadline = time.monotonic() + timeout
        while (row := self.dataset(dataset_id))["state"] in ("pending", "scanning"):
            if time.monotonic() > deadline:
                raise TimeoutError(f"dataset {dataset_id} still pending after {timeout}s")
            time.sleep(poll)
        return row

    # pages
    def _pages(self, fetch: Callable[..., dict], page_size: int, **filters) -> Iterator[dict]:
        offset = 0
        while True:
            page = fetch(limit=page_size, offset=offset, **filters)
            yield from page["data"]
            if len(page["data"]) < page.get("limit", page_size) or not page["data"]:
                return
            offset += len(page["data"])

    def iter_jobs(self, page_size: int = 100, **filters) -> Iterator[dict]:
        """Every job matching the filters (state, kind, method), newest first, a page at a time."""
        return self._pages(self.jobs, page_size, **filters)

    def iter_datasets(self, page_size: int = 100) -> Iterator[dict]:
        return self._pages(self.datasets, page_size)

    def iter_checkpoints(self, job: str | None = None, page_size: int = 100) -> Iterator[dict]:
        return self._pages(self.checkpoints, page_size, job=job)

    def iter_scores(self, page_size: int = 100, **filters) -> Iterator[dict]:
        return self._pages(self.scores, page_size, **filters)

    # jobs
    def wait(self, job_id: str, timeout: float = 3600, poll: float = 1.0, on_update: Callable[[dict], None] | None = None,
             raise_on_failure: bool = False) -> dict:
        """Poll until the job ends; `on_update(job)` sees every poll. With raise_on_failure a
        failed or cancelled job raises JobFailed."""
        deadline = time.monotonic() + timeout
        while True:
            job = self.job(job_id)
            if on_update:
                on_update(job)
            if job["state"] in TERMINAL:
                if raise_on_failure and job["state"] != "succeeded":
                    raise JobFailed(job)
                return job
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still {job['state']} after {timeout}s")
            time.sleep(poll)

    def events(self, job_id: str, last_event_id: str | None = None, metrics: bool = True,
               reconnects: int = 5) -> Iterator[Event]:
        """The job's live event stream (state changes, logs, metrics by step) until it ends, with
        an `end` event last. A dropped connection is resumed with Last-Event-ID."""
        failures = 0
        while True:
            headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
            try:
                with self.http.stream("GET", f"/v1/jobs/{job_id}/events", headers=headers,
                                      params={"stream": "true", "metrics": str(metrics).lower()},
                                      timeout=httpx.Timeout(30, read=None)) as response:
                    if response.status_code >= 400:
                        response.read()
                        raise_for(response)
                    decoder = Decoder()
                    for line in response.iter_lines():
                        event = decoder.feed(line)
                        if event is None:
                            continue
                        last_event_id = event.id or last_event_id
                        failures = 0
                        yield event
                        if event.event == "end":
                            return
            except httpx.TransportError as exc:
                failures += 1
                if failures > reconnects:
                    raise ConnectionFailed(self.base_url, f"event stream lost: {type(exc).__name__}") from None
                time.sleep(min(0.5 * failures, 5))

    # checkpoints
    def download(self, checkpoint_id: str, dest: str | Path, part: str = "backbone", format: str = "safetensors",
                 on_progress: Callable[[int, int], None] | None = None, chunk_size: int = 1 << 20) -> tuple[Path, str]:
        """Download a checkpoint part (or format="onnx") to `dest`, resuming a previous partial
        download with Range; returns (path, sha256), checked against the ETag.
        `on_progress(done_bytes, total_bytes)` is called per chunk."""
        job = transfer.Download(Path(dest))
        params = {"part": part, "format": format}
        try:
            while True:
                with self.http.stream("GET", f"/v1/checkpoints/{checkpoint_id}/download", params=params,
                                      headers=job.request_headers()) as response:
                    if response.status_code == 416:  # the partial file is stale: start again
                        job.restart()
                        continue
                    if response.status_code >= 400:
                        response.read()
                        raise_for(response)
                    job.begin(response.status_code, response.headers)
                    for chunk in response.iter_bytes(chunk_size):
                        job.write(chunk)
                        if on_progress:
                            on_progress(job.done, job.total)
                return job.finish()
        except httpx.TransportError as exc:
            raise ConnectionFailed(self.base_url, f"download interrupted: {type(exc).__name__}; run it again to "
                                                  f"resume") from None
        finally:
            job.close()

    # embeddings
    def embeddings(self, model: str, inputs: list):
        """(N, D) float32 numpy array of the inputs' embeddings (sent as base64 floats)."""
        return transfer.to_array(self.embed(model, inputs, encoding_format="base64"))
