"""The asynchronous Python client: the same calls as `Client`, awaited.

    async with AsyncClient(url) as dm:
        job = await dm.submit(spec)
        async for event in dm.events(job["id"]):
            ...
"""
from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx

from client import transfer
from client.calls import TERMINAL, Calls, retry_wait, upload_fields
from client.errors import ConnectionFailed, JobFailed, transport_failure
from client.sdk import raise_for
from client.sse import Decoder, Event
from client.token import local_token


class AsyncClient(Calls):
    def __init__(self, base_url: str = "http://127.0.0.1:8000", api_key: str | None = None, timeout: float = 60,
                 retries: int = 2):
        api_key = api_key or local_token(base_url)  # a local server's launch token when no key is given
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.base_url, self.retries = base_url.rstrip("/"), retries
        self.http = httpx.AsyncClient(base_url=self.base_url, headers=headers, timeout=timeout)

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self.http.aclose()

    async def _call(self, method: str, path: str, **kwargs):
        for attempt in range(self.retries + 1):
            try:
                response = await self.http.request(method, path, **kwargs)
            except httpx.TransportError as exc:
                raise transport_failure(self.base_url, exc, self.http.timeout.read) from None
            wait = retry_wait(response)
            if response.status_code != 429 or attempt == self.retries or wait is None:
                break
            await asyncio.sleep(wait)
        raise_for(response)
        return response.json()

    async def ready(self) -> bool:
        try:
            return (await self.http.get("/readyz")).status_code == 200
        except httpx.HTTPError:
            return False

    async def upload_dataset(self, path: str | Path, format: str | None = None, **options) -> dict:
        with open(path, "rb") as f:
            return await self._call("POST", "/v1/datasets", files={"file": (Path(path).name, f.read())},
                                    data=upload_fields(format, options))

    async def _pages(self, fetch, page_size: int, **filters) -> AsyncIterator[dict]:
        offset = 0
        while True:
            page = await fetch(limit=page_size, offset=offset, **filters)
            for row in page["data"]:
                yield row
            if len(page["data"]) < page.get("limit", page_size) or not page["data"]:
                return
            offset += len(page["data"])

    def iter_jobs(self, page_size: int = 100, **filters) -> AsyncIterator[dict]:
        return self._pages(self.jobs, page_size, **filters)

    def iter_datasets(self, page_size: int = 100) -> AsyncIterator[dict]:
        return self._pages(self.datasets, page_size)

    def iter_checkpoints(self, job: str | None = None, page_size: int = 100) -> AsyncIterator[dict]:
        return self._pages(self.checkpoints, page_size, job=job)

    def iter_scores(self, page_size: int = 100, **filters) -> AsyncIterator[dict]:
        return self._pages(self.scores, page_size, **filters)

    async def wait(self, job_id: str, timeout: float = 3600, poll: float = 1.0, on_update: Callable | None = None,
                   raise_on_failure: bool = False) -> dict:
        """Poll until the job ends; `on_update(job)` (a function or a coroutine function) sees every poll."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            job = await self.job(job_id)
            if on_update:
                result = on_update(job)
                if inspect.isawaitable(result):
                    await result
            if job["state"] in TERMINAL:
                if raise_on_failure and job["state"] != "succeeded":
                    raise JobFailed(job)
                return job
            if loop.time() > deadline:
                raise TimeoutError(f"job {job_id} still {job['state']} after {timeout}s")
            await asyncio.sleep(poll)

    async def events(self, job_id: str, last_event_id: str | None = None, metrics: bool = True,
                     reconnects: int = 5) -> AsyncIterator[Event]:
        """As Client.events: the live stream, resumed with Last-Event-ID after a dropped connection."""
        failures = 0
        while True:
            headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
            try:
                async with self.http.stream("GET", f"/v1/jobs/{job_id}/events", headers=headers,
                                            params={"stream": "true", "metrics": str(metrics).lower()},
                                            timeout=httpx.Timeout(30, read=None)) as response:
                    if response.status_code >= 400:
                        await response.aread()
                        raise_for(response)
                    decoder = Decoder()
                    async for line in response.aiter_lines():
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
                await asyncio.sleep(min(0.5 * failures, 5))

    async def download(self, checkpoint_id: str, dest: str | Path, part: str = "backbone", format: str = "safetensors",
                       on_progress: Callable[[int, int], None] | None = None,
                       chunk_size: int = 1 << 20) -> tuple[Path, str]:
        """As Client.download: resumable with Range, checked against the ETag sha256."""
        job = transfer.Download(Path(dest))
        params = {"part": part, "format": format}
        try:
            while True:
                async with self.http.stream("GET", f"/v1/checkpoints/{checkpoint_id}/download", params=params,
                                            headers=job.request_headers()) as response:
                    if response.status_code == 416:
                        job.restart()
                        continue
                    if response.status_code >= 400:
                        await response.aread()
                        raise_for(response)
                    job.begin(response.status_code, response.headers)
                    async for chunk in response.aiter_bytes(chunk_size):
                        job.write(chunk)
                        if on_progress:
                            on_progress(job.done, job.total)
                return job.finish()
        except httpx.TransportError as exc:
            raise ConnectionFailed(self.base_url, f"download interrupted: {type(exc).__name__}") from None
        finally:
            job.close()

    async def embeddings(self, model: str, inputs: list):
        """(N, D) float32 numpy array of the inputs' embeddings."""
        return transfer.to_array(await self.embed(model, inputs, encoding_format="base64"))
