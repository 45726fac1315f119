"""Datasets: register built-ins, uploads and URIs; scan them (on a worker) into `ready` or
`invalid`; load them for training (in memory, or streamed for WebDataset shards)."""
from __future__ import annotations

import copy
import logging
import os
import threading
from functools import lru_cache
from pathlib import Path

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from core.data import ArrayDataset, DatasetUnavailable, load_source, split_by_fraction
from core.data.archives import Limits
from core.data.builtin import NAMES as BUILTIN_NAMES
from core.data.builtin import class_names as builtin_class_names
from core.data.builtin import TEXT_NAMES
from core.data.files import load_npz, npz_item
from core.data.scan import FILE_FORMATS, FOLDER_FORMAT, ScanOptions, scan_file
from core.data.webdataset import WebDatasetStream, count_shards, expand_shards, fsspec_opener, head_sample, scan_shards
from jobs.ids import new_id
from jobs.settings import Settings
from jobs.storage import ArtifactStore
from jobs.tables import DEFAULT_PROJECT, Dataset, Project

log = logging.getLogger(__name__)
FORMATS = (*FILE_FORMATS, FOLDER_FORMAT, "webdataset")
UPLOAD_SCHEME = "upload://"


class DatasetNotFound(LookupError):
    pass


def describe(train: ArrayDataset, test: ArrayDataset) -> dict:
    mean, std = train.channel_stats()
    return {"n_items": len(train), "n_test": len(test), "n_classes": max(train.num_classes, test.num_classes),
            "content_hash": train.content_hash(),
            "stats": {"mean": mean, "std": std, "channels": train.channels, "image_size": train.image_size,
                      "labelled": bool((train.labels >= 0).any()), "modality": "image"}}


BUILTIN_LOCK = threading.Lock()


@lru_cache(maxsize=None)
def _described_builtin(name: str) -> dict:
    train, test = load_source(f"builtin://{name}")
    return describe(train, test)


def builtin_description(name: str) -> dict:
    """The row fields of a built-in image dataset, loaded and described once per process: the
    first jobs submitted on it (often many at once) wait for one load instead of each loading it."""
    with BUILTIN_LOCK:
        return copy.deepcopy(_described_builtin(name))


def register_builtin(session: Session, project_id: str, name: str) -> Dataset:
    """Register (or return the already registered) built-in dataset; scanned synchronously (small)."""
    if name not in BUILTIN_NAMES:
        raise DatasetUnavailable(f"unknown built-in dataset {name!r}; choose one of {', '.join(BUILTIN_NAMES)}")
    if name in TEXT_NAMES:
        from jobs.text import register_builtin_text

        return register_builtin_text(session, project_id, name)
    existing = session.scalar(select(Dataset).where(Dataset.project_id == project_id, Dataset.uri == f"builtin://{name}"))
    if existing is not None and existing.state == "ready":
        return existing
    description = builtin_description(name)  # raises DatasetUnavailable with the install hint
    dataset = existing or Dataset(id=new_id("ds"), project_id=project_id, name=name, uri=f"builtin://{name}",
                                  format="builtin")
    for key, value in description.items():
        setattr(dataset, key, value)
    dataset.state, dataset.error = "ready", None
    session.add(dataset)
    session.flush()
    return dataset


def scan_options(options: dict) -> dict:
    """The user's scan options, checked: image_size, short_side, test_fraction, seed."""
    clean = {}
    if options.get("short_side") is not None:
        side = int(options["short_side"])
        if not 8 <= side <= 1024:
            raise DatasetUnavailable("short_side must be between 8 and 1024")
        if options.get("image_size") is not None:
            raise DatasetUnavailable("give image_size (square images) or short_side (aspect kept), not both")
        clean["short_side"] = side
    if options.get("image_size") is not None:
        size = int(options["image_size"])
        if not 4 <= size <= 1024:
            raise DatasetUnavailable("image_size must be between 4 and 1024")
        clean["image_size"] = size
    fraction = float(options.get("test_fraction", 0.2))
    if not 0 < fraction < 1:
        raise DatasetUnavailable("test_fraction must be in (0, 1)")
    clean["test_fraction"] = fraction
    clean["seed"] = int(options.get("seed", 0))
    return clean


def check_format(fmt: str | None) -> str:
    if fmt not in FORMATS:
        raise DatasetUnavailable(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    return fmt


def allowed_sources(session: Session, settings: Settings, project_id: str) -> list[str]:
    """The URI prefixes a project's datasets may come from: its entries in dataset_sources (by
    name or id); the default project of a service without auth also has data_roots and any s3://."""
    project = session.get(Project, project_id)
    names = [project_id] + ([project.name] if project is not None else [])
    prefixes = [prefix for name in names for prefix in settings.dataset_sources.get(name, [])]
    if project_id == DEFAULT_PROJECT and not settings.auth:
        prefixes += [str(root) for root in settings.data_root_list] + ["s3://"]
    return prefixes


def _under(uri: str, prefix: str) -> bool:
    if prefix.startswith("s3://") or uri.startswith("s3://"):
        if not (prefix.startswith("s3://") and uri.startswith("s3://")):
            return False
        return prefix == "s3://" or uri == prefix.rstrip("/") or uri.startswith(prefix.rstrip("/") + "/")
    root = Path(prefix.removeprefix("file://")).expanduser().resolve()
    return Path(uri).is_relative_to(root)


def check_uri(settings: Settings, uri: str | list[str], fmt: str, allowed: list[str] | None = None) -> str:
    """A URI workers can read and the project may use: s3://bucket/key under one of `allowed`, or an
    absolute local path under one of them (stored resolved, so the worker opens what was checked).
    `allowed` None: the default project's (data_roots and any s3://)."""
    if isinstance(uri, list) and fmt != "webdataset":
        raise DatasetUnavailable("a list of URIs is only for webdataset shards")
    if fmt == "webdataset" and count_shards(uri) > settings.max_shards:
        raise DatasetUnavailable(f"the shard pattern expands to {count_shards(uri):,} names; "
                                 f"at most {settings.max_shards:,} (DARKMATTER_MAX_SHARDS)")
    allowed = [str(r) for r in settings.data_root_list] + ["s3://"] if allowed is None else allowed
    uris = expand_shards(uri) if fmt == "webdataset" else [uri]
    stored = []
    for item in uris:
        if "::" in item:  # stored shards are joined with `::`: a piece holding one would be split into another path
            raise DatasetUnavailable(f"{item!r} contains '::', which separates shard patterns; give each shard "
                                     "as its own list item")
        if item.startswith("s3://"):
            bucket_and_key = item.removeprefix("s3://").split("/")
            if len(bucket_and_key) < 2 or not all(bucket_and_key) or {".", ".."} & set(bucket_and_key):
                raise DatasetUnavailable(f"not an s3://bucket/key URI: {item!r}")
            checked = item
        elif "://" in item and not item.startswith("file://"):
            raise DatasetUnavailable(f"unsupported URI scheme in {item!r}: use s3:// or a local path")
        else:
            path = Path(item.removeprefix("file://"))
            if not path.is_absolute():
                raise DatasetUnavailable(f"local dataset paths must be absolute: {item!r}")
            checked = str(path.resolve())
            if "::" in checked:  # a link whose target holds the separator would be split on read
                raise DatasetUnavailable(f"{item!r} resolves to {checked!r}, which contains '::'")
        if not any(_under(checked, prefix) for prefix in allowed):
            raise DatasetUnavailable(f"{item!r} is not under an allowed data root or source of this project "
                                     "(an operator sets them in DARKMATTER_DATASET_SOURCES, per project)")
        stored.append(checked)
    if isinstance(uri, str) and all(s == u.removeprefix("file://") for s, u in zip(stored, uris)):
        return uri  # already resolved (a shard pattern stays a pattern: the worker expands it again)
    return "::".join(stored)


def check_source(uri: str, allowed: list[str]) -> str:
    """At read time (in the worker): a stored source is still under one of the project's allowed
    prefixes and a local path still resolves to itself (no link put in its way since it was
    checked). Returns the URI to open; raises DatasetUnavailable otherwise."""
    if uri.startswith("s3://"):
        checked = uri
    elif "://" in uri and not uri.startswith("file://"):
        raise DatasetUnavailable(f"unsupported URI scheme in {uri!r}")
    else:
        path = Path(uri.removeprefix("file://"))
        if not path.is_absolute() or path.resolve() != path:
            raise DatasetUnavailable(f"{uri} now leads elsewhere (a link, or not absolute); register it again")
        checked = str(path)
    if not any(_under(checked, prefix) for prefix in allowed):
        raise DatasetUnavailable(f"{uri!r} is not under an allowed data root or source of this project")
    return checked


def project_sources(settings: Settings, project_id: str) -> list[str]:
    """allowed_sources, read in a session of its own (workers check each source they open)."""
    from jobs.db import session_scope

    with session_scope(settings.database_url) as session:
        return allowed_sources(session, settings, project_id)


def guarded_opener(settings: Settings, allowed: list[str]):
    """fsspec_opener that checks each shard against the project's sources before opening it."""
    open_url = fsspec_opener(settings.storage_options)
    return lambda url: open_url(check_source(url, allowed))


def register_uri(session: Session, settings: Settings, project_id: str, uri: str | list[str], fmt: str,
                 name: str | None = None, options: dict | None = None) -> Dataset:
    """A pending dataset row for a URI; the scan task (enqueued by the caller) fills it in."""
    check_format(fmt)
    stored = check_uri(settings, uri, fmt, allowed_sources(session, settings, project_id))
    dataset = Dataset(id=new_id("ds"), project_id=project_id, name=name or stored.rsplit("/", 1)[-1][:200],
                      uri=stored, format=fmt, state="pending", stats={"options": scan_options(options or {})})
    session.add(dataset)
    session.flush()
    return dataset


def add_upload(session: Session, project_id: str, dataset_id: str, key: str, fmt: str, name: str, options: dict,
               content_hash: str, size: int) -> Dataset:
    dataset = Dataset(id=dataset_id, project_id=project_id, name=name[:200], uri=UPLOAD_SCHEME + key, format=fmt,
                      state="pending", content_hash=content_hash,
                      stats={"options": options, "source_bytes": size})
    session.add(dataset)
    session.flush()
    return dataset


def limits(settings: Settings) -> Limits:
    return Limits(max_members=settings.max_archive_members, max_member_bytes=settings.max_member_bytes, max_total_bytes=settings.max_extracted_bytes,
                  max_ratio=settings.max_compression_ratio)


def local_source(settings: Settings, store: ArtifactStore, dataset: Dataset) -> Path:
    """A local path to the dataset's file: the artifact store's copy of an upload, the path
    itself, or an s3:// object downloaded to the worker's cache."""
    if dataset.uri.startswith(UPLOAD_SCHEME):
        return store.local_path(dataset.uri.removeprefix(UPLOAD_SCHEME))
    if dataset.uri.startswith("s3://"):
        check_source(dataset.uri, project_sources(settings, dataset.project_id))
        target = settings.home / "cache" / "datasets" / dataset.id / f"source.{dataset.format}"
        if not target.exists():
            copy_capped(settings, dataset.uri, target)
        return target
    return Path(check_source(dataset.uri, project_sources(settings, dataset.project_id)))


def copy_capped(settings: Settings, uri: str, target: Path) -> None:
    """Copy an s3:// object to `target`, refusing one larger than max_source_bytes (by its listed
    size, and while copying); a failed copy leaves no partial file."""
    import fsspec

    cap = settings.max_source_bytes
    too_large = f"{uri} is larger than the limit of {cap:,} bytes (DARKMATTER_MAX_SOURCE_BYTES)"
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.part{os.getpid()}")
    try:
        with fsspec.open(uri, "rb", **settings.storage_options) as src:
            if (getattr(src, "size", None) or 0) > cap:
                raise DatasetUnavailable(too_large)
            with open(tmp, "wb") as dst:
                copied = 0
                while chunk := src.read(1024 * 1024):
                    copied += len(chunk)
                    if copied > cap:
                        raise DatasetUnavailable(too_large)
                    dst.write(chunk)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


SCANNING = "scanning"


def claim_scan(session: Session, dataset_id: str, worker: str) -> bool:
    """pending -> scanning under this worker's lease (a conditional UPDATE: one claim wins, so a
    duplicate scan message finds the dataset taken)."""
    from sqlalchemy import update

    from jobs.db import db_now

    row = session.get(Dataset, dataset_id)
    if row is None or row.state != "pending":
        return False
    stats = {**(row.stats or {}), "scan": {"worker": worker, "started_at": db_now(session).isoformat()}}
    query = update(Dataset).where(Dataset.id == dataset_id, Dataset.state == "pending").values(state=SCANNING, stats=stats)
    return session.execute(query.execution_options(synchronize_session=False)).rowcount == 1


def finish_scan(session: Session, dataset: Dataset) -> bool:
    """Write a scan's outcome, only while the dataset is still `scanning` (not expired meanwhile)."""
    from sqlalchemy import update

    values = {name: getattr(dataset, name) for name in
              ("state", "error", "n_items", "n_test", "n_classes", "content_hash", "stats")}
    query = update(Dataset).where(Dataset.id == dataset.id, Dataset.state == SCANNING).values(**values)
    return session.execute(query.execution_options(synchronize_session=False)).rowcount == 1


def fail_scan(session: Session, dataset_id: str, reason: str) -> bool:
    """scanning -> invalid with the reason (a scan that died, ran too long or lost its worker)."""
    from sqlalchemy import update

    query = update(Dataset).where(Dataset.id == dataset_id, Dataset.state == SCANNING).values(state="invalid",
                                                                                              error=reason[:2000])
    return session.execute(query.execution_options(synchronize_session=False)).rowcount == 1


def prepared_key(dataset_id: str) -> str:
    return f"datasets/{dataset_id}/arrays.npz"


def scan(settings: Settings, store: ArtifactStore, dataset: Dataset) -> None:
    """Scan the source and set the row `ready` (counts, stats, content hash, prepared arrays) or
    `invalid` (with the reason). Image sources are decoded once into an .npz of uint8 arrays."""
    options = (dataset.stats or {}).get("options", {})
    try:
        if dataset.format == "webdataset":
            opener = guarded_opener(settings, project_sources(settings, dataset.project_id))
            facts = scan_shards(expand_shards(dataset.uri), opener,
                                options.get("image_size"), limits(settings).max_pixels)
            dataset.n_items, dataset.n_test, dataset.n_classes = facts["n_items"], 0, facts["n_classes"]
            dataset.content_hash = facts["content_hash"]
            dataset.stats = {"options": options, "modality": "image", **facts["stats"]}
        else:
            path = local_source(settings, store, dataset)
            short_side = options.get("short_side") or (None if options.get("image_size") else
                                                       settings.store_short_side or None)
            result = scan_file(path, dataset.format, ScanOptions(limits=limits(settings), **{
                **options, "short_side": short_side}))
            stats = {"options": options, **(dataset.stats or {}), **result.stats}
            if result.train is not None:
                key = prepared_key(dataset.id)
                target = store.staging_path(key)
                tmp = target.with_name(f".{target.name}.part{os.getpid()}")
                try:
                    with open(tmp, "wb") as f:
                        sizes = {} if result.train.sizes is None else {  # each item's (h, w) on its canvas
                            "s": result.train.sizes.numpy(), "s_test": result.test.sizes.numpy()}
                        np.savez(f, x=result.train.images.numpy(), y=result.train.labels.numpy(),
                                 x_test=result.test.images.numpy(), y_test=result.test.labels.numpy(), **sizes)
                    os.replace(tmp, target)
                finally:
                    tmp.unlink(missing_ok=True)  # a torn write leaves nothing
                store.commit(key)
                stats["prepared"], stats["prepared_bytes"] = key, target.stat().st_size  # counted by the quota
            dataset.n_items, dataset.n_test, dataset.n_classes = result.n_items, result.n_test, result.n_classes
            dataset.content_hash, dataset.stats = result.content_hash, stats
        dataset.state, dataset.error = "ready", None
    except (DatasetUnavailable, OSError, ValueError) as exc:
        log.info("dataset %s is invalid: %s", dataset.id, exc)
        dataset.state, dataset.error = "invalid", str(exc)[:2000]
        if isinstance(exc, (FileNotFoundError, PermissionError)) and "s3://" in dataset.uri:
            dataset.error = "cannot read it from S3: missing, or not readable with the service's credentials"
    except Exception as exc:  # a reader bug must not leave the row pending forever
        log.exception("scan of dataset %s failed", dataset.id)
        dataset.state, dataset.error = "invalid", f"scan failed: {type(exc).__name__}: {exc}"[:2000]
    if dataset.state == "invalid" and dataset.uri.startswith(UPLOAD_SCHEME):  # an unusable upload keeps no bytes
        store.delete(f"datasets/{dataset.id}")


def find(session: Session, project_id: str, ref: str) -> Dataset | None:
    """This project's dataset with that id, else its newest one with that name."""
    dataset = session.get(Dataset, ref)
    if dataset is not None and dataset.project_id == project_id:
        return dataset
    return session.scalars(select(Dataset).where(Dataset.project_id == project_id, Dataset.name == ref)
                           .order_by(Dataset.created_at.desc()).limit(1)).first()


def class_names(dataset: Dataset | None) -> list[str]:
    """The dataset's class names by label index (a folder's sub-folder names; a built-in's digits
    or Fashion-MNIST's classes); empty when unknown."""
    if dataset is None:
        return []
    names = (dataset.stats or {}).get("classes")
    if names:
        return [str(n) for n in names]
    if dataset.format == "builtin":
        return list(builtin_class_names(dataset.uri.partition("://")[2]))
    return []


def resolve(session: Session, project_id: str, ref: str) -> Dataset:
    """A dataset id or name of this project, or a built-in name (registered on first use)."""
    dataset = find(session, project_id, ref)
    if dataset is not None:
        return dataset
    if ref in BUILTIN_NAMES:
        return register_builtin(session, project_id, ref)
    raise DatasetNotFound(f"dataset {ref!r} not found (neither an id nor a name of this project's datasets, "
                          f"nor a built-in: {', '.join(BUILTIN_NAMES)})")


def is_streamed(dataset: Dataset) -> bool:
    return dataset.format == "webdataset"


def load(dataset: Dataset, store: ArtifactStore | None = None,
         keep_canvas: bool = False) -> tuple[ArrayDataset, ArrayDataset]:
    """(train, test) uint8 arrays at the dataset's scanned size. Images stored keeping their
    aspect come as centre crops at the training side (what evaluation and embeddings read),
    or with `keep_canvas` as stored, with their sizes (what training crops from)."""
    train, test = _load(dataset, store)
    if train.sizes is not None and not keep_canvas:
        from core.data.canvas import center_cropped

        side = dataset.stats["image_size"]
        return center_cropped(train, side), center_cropped(test, side)
    return train, test


def _load(dataset: Dataset, store: ArtifactStore | None = None) -> tuple[ArrayDataset, ArrayDataset]:
    if dataset.format == "builtin" or "prepared" not in (dataset.stats or {}):
        if dataset.format in ("txt", "jsonl"):
            raise DatasetUnavailable("a text dataset has no images (jobs.text.load_splits reads its documents)")
        if dataset.format == "webdataset":
            raise DatasetUnavailable("webdataset shards are streamed, not loaded (use stream())")
        return load_source(dataset.uri)
    if store is None:
        raise DatasetUnavailable("an artifact store is needed to load an uploaded or scanned dataset")
    return load_npz(str(store.local_path(dataset.stats["prepared"])))


def load_sizes(dataset: Dataset, store: ArtifactStore) -> "torch.Tensor | None":
    """The training items' (h, w) on their canvas (images stored keeping their aspect), read
    without the pixels; None for square images."""
    import torch

    if not (dataset.stats or {}).get("stored_short_side"):
        return None
    with np.load(store.local_path(dataset.stats["prepared"]), allow_pickle=False) as arrays:
        return torch.from_numpy(arrays["s"].astype(np.int64))


def read_item(dataset: Dataset, store: ArtifactStore, split: str, index: int) -> tuple[np.ndarray | None, int]:
    """((C, H, W) uint8 or None when out of range, items in the split) of a scanned dataset, read
    from its prepared arrays without loading them."""
    path = store.local_path(dataset.stats["prepared"])
    item, count = npz_item(path, "x" if split == "train" else "x_test", index)
    if item is not None and (dataset.stats or {}).get("stored_short_side"):  # its valid region, not the canvas
        h, w = npz_item(path, "s" if split == "train" else "s_test", index)[0]
        item = item[:, :h, :w]
    return item, count


def stream(settings: Settings, dataset: Dataset) -> WebDatasetStream:
    stats = dataset.stats
    return WebDatasetStream(stats["shards"], stats["image_size"], stats["channels"],
                            opener=guarded_opener(settings, project_sources(settings, dataset.project_id)), shuffle_buffer=settings.shuffle_buffer,
                            max_pixels=limits(settings).max_pixels, shard_items=stats.get("shard_items"))


def stream_eval_split(settings: Settings, dataset: Dataset, image_size: int) -> tuple[ArrayDataset, ArrayDataset]:
    """For auto-eval of a streamed dataset: its first stream_eval_items samples (shard order),
    split by the dataset's test_fraction and seed."""
    source = stream(settings, dataset)
    source.image_size = image_size
    sample = head_sample(source, settings.stream_eval_items)
    options = dataset.stats.get("options", {})
    return split_by_fraction(sample, options.get("test_fraction", 0.2), options.get("seed", 0))


def expire_scans(session: Session, seconds: float) -> list[str]:
    """Datasets `scanning` for longer than `seconds` (their worker died or stopped mid-scan: a live
    worker stops its own scan at scan_seconds) end invalid with the reason. Returns their ids."""
    from datetime import datetime, timedelta

    from jobs.db import db_now

    cutoff = db_now(session) - timedelta(seconds=seconds)
    expired = []
    for dataset in session.scalars(select(Dataset).where(Dataset.state == SCANNING)):
        started = ((dataset.stats or {}).get("scan") or {}).get("started_at")
        if started is None or datetime.fromisoformat(started) < cutoff:
            if fail_scan(session, dataset.id, f"the scan did not finish within {seconds:.0f}s: its worker was lost "
                                              "or stopped; register the dataset again"):
                expired.append(dataset.id)
    return expired


def scans_due(session: Session, seconds: float) -> list[str]:
    """Ids of datasets pending for longer than `seconds` since creation and since their scan was
    last rung (stats.scan_rung_at): their scan message may have been lost. Each is marked rung."""
    from datetime import datetime, timedelta

    from jobs.db import db_now

    now = db_now(session)
    cutoff = now - timedelta(seconds=seconds)
    due = []
    for dataset in session.scalars(select(Dataset).where(Dataset.state == "pending", Dataset.created_at < cutoff)):
        rung = (dataset.stats or {}).get("scan_rung_at")
        if rung is not None and datetime.fromisoformat(rung) >= cutoff:
            continue
        dataset.stats = {**(dataset.stats or {}), "scan_rung_at": now.isoformat()}
        due.append(dataset.id)
    return due
