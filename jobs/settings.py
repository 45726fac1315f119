"""One settings class, read from DARKMATTER_* environment variables."""
from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import NonNegativeInt, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DARKMATTER_")

    home: Path = Path(".darkmatter")
    database_url: str = ""  # default: SQLite in `home`
    broker_url: str = ""  # default: kombu's SQLAlchemy transport on SQLite in `home`
    result_backend: str = ""
    broker_key_prefix: str = ""  # Redis only: isolates deployments sharing one Redis
    storage_url: str = ""  # default: `home`/artifacts
    queues: str = "default,gpu,cpu"
    default_queue: str = "default"
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    auth: bool = False
    log_format: Literal["json", "text"] = "json"  # json (one object a line, with job ids) | text
    migrate_on_start: bool = True
    max_embedding_inputs: int = 256
    max_embedding_input_bytes: int = 4 * 1024 * 1024
    max_embedding_audio_seconds: float = 30.0  # a longer clip sent to /v1/embeddings answers 413
    max_body_bytes: int = 16 * 1024 * 1024  # JSON expands ~9x once parsed (a list of numbers): ~150 MB a request
    large_body_bytes: int = 1024 * 1024  # requests with larger bodies take one of large_body_slots ...
    large_body_slots: int = 4  # ... so that at most this many are read and handled at once (others wait)
    large_body_seconds: float = 120.0  # a large body must arrive within this (a slow sender holds a slot): 408
    max_json_body_bytes: int = 1024 * 1024  # job specs and dataset registrations (JSON)
    max_json_depth: int = 32  # nesting of any JSON body: deeper is refused before it is parsed
    max_shards: int = 100_000  # names a WebDataset brace pattern or list may expand to
    max_model_parameters: int = 2_000_000_000  # a spec's model (backbone + heads), estimated before it is built
    max_upload_bytes: int = 2 * 1024 * 1024 * 1024  # dataset uploads, counted while streaming
    max_extracted_bytes: int = 16 * 1024 * 1024 * 1024  # an archive's total uncompressed size
    max_member_bytes: int = 256 * 1024 * 1024  # one archive member, uncompressed
    max_compression_ratio: float = 100.0  # refuse archives expanding more (decompression bombs)
    data_roots: str = ""  # comma-separated local folders the default project (auth off) may register datasets from
    # Per project (name or id): the URI prefixes its datasets may come from, s3://bucket/prefix/ or local folders,
    # e.g. DARKMATTER_DATASET_SOURCES='{"team-a": ["s3://data/team-a/", "/mnt/team-a"]}'.
    dataset_sources: Annotated[dict[str, list[str]], NoDecode] = {}
    s3_endpoint_url: str = ""  # for s3:// datasets and artifacts on MinIO or other S3-compatible stores
    shuffle_buffer: int = 1000  # WebDataset streaming
    stream_eval_items: int = 5000  # auto-eval of a streamed dataset: the first items, split by test_fraction
    page_size_max: int = 500
    job_total_seconds: float = 1.0  # GET /v1/jobs: a total of 10,000 jobs or more may be this old; 0: always counted
    rate_limit_per_second: float = 50.0  # per API key (per client address when auth is off); 0: off
    rate_limit_burst: int = 100
    failed_auth_per_minute: float = 10.0  # per client address: failed API-key checks before 429
    failed_auth_burst: int = 20
    max_keys_per_project: int = 20  # API keys a project may hold, disabled ones included (DELETE frees one)
    forwarded_allow_ips: str = "127.0.0.1"  # proxies whose X-Forwarded-For/-Proto uvicorn trusts (comma list, or *)
    allowed_hosts: str = ""  # Host names besides localhost/127.0.0.1/::1 the server answers (comma list, or *)
    launch_token: str = ""  # auth off: /v1 needs this token; `api serve` without --auth makes one if unset
    key_recheck_seconds: float = 5.0  # open event streams re-check their key this often (disabled: closed)
    metrics_token: str = ""  # when set, /metrics needs `Authorization: Bearer <token>`; unset: open only without auth
    max_event_streams: int = 500  # open SSE streams per API process ...
    max_event_streams_per_project: int = 100  # ... and per project
    heartbeat_interval: float = 2.0
    heartbeat_timeout: float = 30.0
    sweep_interval: float = 5.0
    max_attempts: int = 3  # a spec without max_attempts gets this
    watchdog_seconds: float = 900.0  # a training process with no progress this long is killed and retried; 0: off
    child_memory_bytes: int = 0  # a training child (and its ranks) past this RSS is killed and its job failed, not
    # retried; 0: 3/4 of the machine's memory; negative: no cap
    scan_memory_bytes: int = 8 * 1024**3  # a dataset scan's child process is capped at this much memory; 0: no cap
    # image folders and archives with non-square images: store each keeping its aspect, shorter side this long
    # (core/data/canvas.py; 256 for 224-px training, the usual resize-256/crop-224; never enlarged), unless the
    # upload declares image_size or short_side; all-square sets are stored square; 0: squash every image square
    # at the most common side
    store_short_side: int = 256
    scan_seconds: float = 3600.0  # a scan running longer is stopped and its dataset ends invalid with the reason
    max_source_bytes: int = 16 * 1024**3  # an s3:// dataset file is copied to the worker only up to this size
    max_uploads: int = 8  # dataset uploads received at once by one API process (more: 429 with Retry-After) ...
    max_uploads_per_project: int = 2  # ... and by one project
    expensive_per_project: int = 2  # t-SNE maps and ONNX exports computed at once for one project (429 past it) ...
    expensive_total: int = 4  # ... and for all projects together
    max_onnx_parameters: int = 300_000_000  # backbones larger than this are not exported to ONNX (422)
    max_archive_members: int = 2_000_000  # entries of an archive (directories included), checked as it is listed
    checkpoint_seconds: float = 600.0  # a pretrain spec without checkpoint_every checkpoints this often
    requeue_after: float = 300.0  # ring a waiting job's doorbell again after this long (its message may be lost)
    cancel_poll_seconds: float = 0.5
    ray_address: str = ""  # the Ray cluster that runs jobs with nodes > 1 (e.g. "ray-head:6379"); empty: none
    ray_max_failures: int = 2  # Ray Train restarts a job's worker group this often (a dead node, a lost rank)
    # within one attempt, resuming from the last checkpoint, before the attempt counts as lost
    ray_placement_timeout: float = 600.0  # a multi-node job the Ray cluster cannot place within this long fails
    process_group_timeout: float = 600.0  # a collective that waits this long (a dead peer) raises on every rank
    gpus: str = ""  # the GPU ids this worker owns, e.g. "0,1" (default: CUDA_VISIBLE_DEVICES, else GPU 0)
    model_cache_bytes: int = 2 * 1024**3  # loaded backbones kept for embeddings, LRU, bounded by their tensors' bytes
    embedding_max_batch: int = 256  # dynamic batching: rows per shared forward pass (1: off)
    embedding_max_wait_ms: float = 0.0  # how long an idle model waits for more requests to join (requests that
    # arrive while it is busy always batch)
    embedding_device: str = "auto"  # where loaded models run: auto (the GPU when the API sees one) | cpu | cuda:N
    embedding_precision: Literal["auto", "fp32", "bf16"] = "auto"  # image models: auto is bf16 autocast where the
    # device computes bf16 natively (recent GPUs, CPUs with AVX512-BF16/AMX), else fp32
    embedding_deadline_s: float = 30.0  # a request waiting longer for its batch answers 503
    gc_interval: float = 600.0  # seconds between garbage collections of unregistered artifact files
    gc_min_age: float = 3600.0  # younger unregistered files may be a checkpoint being written now
    cache_max_bytes: int = 20 * 1024**3  # local copies of remote artifacts and datasets (`home`/cache), trimmed LRU
    cache_min_age: float = 900.0  # cached files used more recently than this are never trimmed
    cache_interval: float = 300.0  # seconds between trims of the cache (API and workers); 0: off
    # Per-project quotas (0: unlimited). Datasets built into the service count against none.
    quota_datasets: NonNegativeInt = 1000  # registered and uploaded datasets
    quota_stored_bytes: NonNegativeInt = 1024**4  # dataset files, checkpoints and indexes in the artifact store (1 TiB)
    quota_active_jobs: NonNegativeInt = 100  # queued and running jobs; past it a submit answers 429

    @field_validator("dataset_sources", mode="before")
    @classmethod
    def sources_from_json(cls, value):
        """The environment gives JSON; empty (as compose passes an unset variable) means none."""
        if isinstance(value, str):
            return json.loads(value) if value.strip() else {}
        return value

    def resolved(self) -> "Settings":
        """Fill the embedded defaults (SQLite, SQLite broker, local artifacts) from `home`."""
        home = self.home.expanduser().resolve()
        home.mkdir(parents=True, exist_ok=True)
        return self.model_copy(update={
            "home": home,
            "database_url": self.database_url or f"sqlite:///{home / 'darkmatter.db'}",
            "broker_url": self.broker_url or f"sqla+sqlite:///{home / 'broker.db'}",
            "result_backend": self.result_backend or f"db+sqlite:///{home / 'results.db'}",
            "storage_url": self.storage_url or str(home / "artifacts"),
        })

    @property
    def data_root_list(self) -> list[Path]:
        return [Path(r.strip()).expanduser().resolve() for r in self.data_roots.split(",") if r.strip()]

    @property
    def storage_options(self) -> dict:
        """fsspec options for s3:// URLs (endpoint for MinIO/moto; credentials from the AWS env)."""
        return {"client_kwargs": {"endpoint_url": self.s3_endpoint_url}} if self.s3_endpoint_url else {}

    @property
    def queue_list(self) -> list[str]:
        return [q.strip() for q in self.queues.split(",") if q.strip()]


@lru_cache
def get_settings() -> Settings:
    return Settings().resolved()
