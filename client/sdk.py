"""A small httpx client for the darkmatter HTTP API."""
from __future__ import annotations

import hashlib
import time
from pathlib import Path

import httpx

TERMINAL = ("succeeded", "failed", "cancelled")


class ApiError(RuntimeError):
    def __init__(self, status: int, detail):
        super().__init__(f"HTTP {status}: {detail}")
        self.status, self.detail = status, detail


class Client:
    def __init__(self, base_url: str = "http://127.0.0.1:8000", api_key: str | None = None, timeout: float = 60):
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.http = httpx.Client(base_url=base_url.rstrip("/"), headers=headers, timeout=timeout)

    def _call(self, method: str, path: str, **kwargs):
        response = self.http.request(method, path, **kwargs)
        if response.status_code >= 400:
            try:
                detail = response.json().get("detail")
            except ValueError:
                detail = response.text
            raise ApiError(response.status_code, detail)
        return response.json()

    def ready(self) -> bool:
        try:
            return self.http.get("/readyz").status_code == 200
        except httpx.HTTPError:
            return False

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not self.ready():
            if time.monotonic() > deadline:
                raise TimeoutError(f"API at {self.http.base_url} not ready after {timeout}s")
            time.sleep(0.3)

    def register_builtin(self, name: str) -> dict:
        return self._call("POST", "/v1/datasets", json={"builtin": name})

    def upload_dataset(self, path: str | Path, format: str | None = None, **options) -> dict:
        """Stream a dataset file (zip, tar, tar.gz, npz, idx, txt, jsonl); it is scanned on a worker.
        Options: name, image_size, test_fraction, seed."""
        fields = {k: str(v) for k, v in {"format": format, **options}.items() if v is not None}
        with open(path, "rb") as f:
            return self._call("POST", "/v1/datasets", files={"file": (Path(path).name, f)}, data=fields)

    def register_dataset(self, uri: str | list[str], format: str, **options) -> dict:
        """A URI the workers can read: s3://..., a local path under DARKMATTER_DATA_ROOTS, or
        WebDataset shards (brace pattern or list)."""
        return self._call("POST", "/v1/datasets", json={"uri": uri, "format": format, **options})

    def dataset(self, dataset_id: str) -> dict:
        return self._call("GET", f"/v1/datasets/{dataset_id}")

    def wait_dataset(self, dataset_id: str, timeout: float = 3600, poll: float = 1.0) -> dict:
        """Until the scan ends: the row is `ready`, or `invalid` with the reason in `error`."""
        deadline = time.monotonic() + timeout
        while (row := self.dataset(dataset_id))["state"] == "pending":
            if time.monotonic() > deadline:
                raise TimeoutError(f"dataset {dataset_id} still pending after {timeout}s")
            time.sleep(poll)
        return row

    def submit(self, spec: dict, idempotency_key: str | None = None) -> dict:
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        return self._call("POST", "/v1/jobs", json=spec, headers=headers)

    def job(self, job_id: str) -> dict:
        return self._call("GET", f"/v1/jobs/{job_id}")

    def jobs(self, **filters) -> dict:
        return self._call("GET", "/v1/jobs", params={k: v for k, v in filters.items() if v is not None})

    def cancel(self, job_id: str) -> dict:
        return self._call("POST", f"/v1/jobs/{job_id}/cancel")

    def wait(self, job_id: str, timeout: float = 3600, poll: float = 1.0, on_update=None) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            job = self.job(job_id)
            if on_update:
                on_update(job)
            if job["state"] in TERMINAL:
                return job
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still {job['state']} after {timeout}s")
            time.sleep(poll)

    def checkpoint(self, checkpoint_id: str) -> dict:
        return self._call("GET", f"/v1/checkpoints/{checkpoint_id}")

    def download(self, checkpoint_id: str, dest: str | Path, part: str = "backbone") -> tuple[Path, str]:
        """Stream a checkpoint part to `dest`; checks the body against the ETag (sha256)."""
        dest = Path(dest)
        digest = hashlib.sha256()
        with self.http.stream("GET", f"/v1/checkpoints/{checkpoint_id}/download", params={"part": part}) as response:
            if response.status_code >= 400:
                response.read()
                raise ApiError(response.status_code, response.text)
            etag = response.headers.get("etag", "").strip('"')
            with open(dest, "wb") as f:
                for chunk in response.iter_bytes():
                    digest.update(chunk)
                    f.write(chunk)
        if etag and digest.hexdigest() != etag:
            raise ApiError(502, f"downloaded file does not match its ETag sha256 {etag}")
        return dest, digest.hexdigest()

    def embed(self, model: str, inputs: list, encoding_format: str = "float", truncate: bool = True) -> dict:
        """Images (base64 / pixel arrays) for an image checkpoint, strings for a text checkpoint."""
        return self._call("POST", "/v1/embeddings", json={"model": model, "input": inputs,
                                                          "encoding_format": encoding_format, "truncate": truncate})

    def neighbors(self, index: str, query: list, k: int = 10, exact: bool = False) -> dict:
        """k nearest items of an embed-index job for item ids, base64 images, pixel arrays or free text."""
        return self._call("POST", "/v1/neighbors", json={"index": index, "query": query, "k": k, "exact": exact})

    def checkpoint_scores(self, checkpoint_id: str) -> dict:
        return self._call("GET", f"/v1/checkpoints/{checkpoint_id}/scores")

    def scores(self, **filters) -> dict:
        return self._call("GET", "/v1/scores", params={k: v for k, v in filters.items() if v is not None})

    def methods(self) -> dict:
        return self._call("GET", "/v1/methods")
