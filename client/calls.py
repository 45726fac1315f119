"""The API's one-request calls, written once for both clients: each returns `self._call(...)`,
a dict for `Client` and an awaitable of one for `AsyncClient`."""
from __future__ import annotations

TERMINAL = ("succeeded", "failed", "cancelled")


def _params(filters: dict) -> dict:
    return {k: v for k, v in filters.items() if v is not None}


class Calls:
    def _call(self, method: str, path: str, **kwargs):
        raise NotImplementedError

    # datasets
    def register_builtin(self, name: str):
        return self._call("POST", "/v1/datasets", json={"builtin": name})

    def register_dataset(self, uri: str | list[str], format: str, **options):
        """A URI the workers can read: s3://..., a local path under DARKMATTER_DATA_ROOTS, or
        WebDataset shards (brace pattern or list)."""
        return self._call("POST", "/v1/datasets", json={"uri": uri, "format": format, **options})

    def dataset(self, dataset_id: str):
        return self._call("GET", f"/v1/datasets/{dataset_id}")

    def datasets(self, limit: int = 100, offset: int = 0):
        return self._call("GET", "/v1/datasets", params={"limit": limit, "offset": offset})

    def delete_dataset(self, dataset_id: str):
        """Delete a dataset with its files and the scores measured on it (409 while a job uses it)."""
        return self._call("DELETE", f"/v1/datasets/{dataset_id}")

    # jobs
    def submit(self, spec: dict, idempotency_key: str | None = None):
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        return self._call("POST", "/v1/jobs", json=spec, headers=headers)

    def job(self, job_id: str):
        return self._call("GET", f"/v1/jobs/{job_id}")

    def jobs(self, **filters):
        """One page: filters state, kind, method, limit, offset."""
        return self._call("GET", "/v1/jobs", params=_params(filters))

    def cancel(self, job_id: str):
        return self._call("POST", f"/v1/jobs/{job_id}/cancel")

    def delete_job(self, job_id: str):
        """Delete an ended job with its events, metrics, checkpoints and scores (409 until it has ended)."""
        return self._call("DELETE", f"/v1/jobs/{job_id}")

    def job_events(self, job_id: str, after: int = 0):
        """The job's recorded events (state changes, logs) after event id `after`; see events() for the live stream."""
        return self._call("GET", f"/v1/jobs/{job_id}/events", params={"after": after})

    def metrics(self, job_id: str, name: str | None = None, after_step: int = 0, limit: int = 1000):
        return self._call("GET", f"/v1/jobs/{job_id}/metrics",
                          params=_params({"name": name, "after_step": after_step, "limit": limit}))

    # checkpoints
    def checkpoint(self, checkpoint_id: str):
        return self._call("GET", f"/v1/checkpoints/{checkpoint_id}")

    def checkpoints(self, job: str | None = None, limit: int = 100, offset: int = 0):
        return self._call("GET", "/v1/checkpoints", params=_params({"job": job, "limit": limit, "offset": offset}))

    def checkpoint_scores(self, checkpoint_id: str):
        return self._call("GET", f"/v1/checkpoints/{checkpoint_id}/scores")

    def delete_checkpoint(self, checkpoint_id: str):
        """Delete a checkpoint with its files and scores (409 while a job uses it or it serves an index)."""
        return self._call("DELETE", f"/v1/checkpoints/{checkpoint_id}")

    def usage(self):
        """The project's datasets, stored bytes and active jobs, each as used against its limit (0: none)."""
        return self._call("GET", "/v1/usage")

    # embeddings, neighbours, scores
    def embed(self, model: str, inputs: list, encoding_format: str = "float", truncate: bool = True):
        """The raw /v1/embeddings answer (`embeddings()` gives a numpy array): images (base64 /
        pixel arrays) for an image checkpoint, strings for a text checkpoint (truncate=False: an
        over-long string answers 422 instead of being cut to the model's max length)."""
        return self._call("POST", "/v1/embeddings", json={"model": model, "input": inputs,
                                                          "encoding_format": encoding_format, "truncate": truncate})

    def neighbors(self, index: str, query: list, k: int = 10, exact: bool = False):
        """k nearest items of an embed-index job for item ids, base64 images, pixel arrays or free text."""
        return self._call("POST", "/v1/neighbors", json={"index": index, "query": query, "k": k, "exact": exact})

    def scores(self, **filters):
        """Score rows and the leaderboard: filters dataset, protocol, metric, method, backbone, checkpoint."""
        return self._call("GET", "/v1/scores", params=_params(filters))

    def methods(self):
        return self._call("GET", "/v1/methods")

    # API keys of the caller's project
    def keys(self):
        return self._call("GET", "/v1/keys")

    def create_key(self, name: str = "", scope: str = "use"):
        """A new key (shown once): scope "use" submits and reads, "admin" also manages keys."""
        return self._call("POST", "/v1/keys", json={"name": name, "scope": scope})

    def disable_key(self, key_id: str):
        return self._call("POST", f"/v1/keys/{key_id}/disable")

    def delete_key(self, key_id: str):
        return self._call("DELETE", f"/v1/keys/{key_id}")


MAX_RETRY_WAIT = 10.0  # seconds; a 429 asking for a longer wait (a quota, not a burst) is raised at once


def retry_wait(response) -> float | None:
    """How long to wait before retrying a 429: its Retry-After (1 s without one), or None when that is
    longer than MAX_RETRY_WAIT."""
    try:
        wait = float(response.headers.get("retry-after", "1") or 1)
    except ValueError:
        wait = 1.0
    return wait if wait <= MAX_RETRY_WAIT else None


def upload_fields(format: str | None, options: dict) -> dict:
    """The multipart form fields of a dataset upload."""
    return {k: str(v) for k, v in {"format": format, **options}.items() if v is not None}
