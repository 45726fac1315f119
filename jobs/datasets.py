"""Datasets of every modality: register built-ins, uploads and URIs; scan them (on a worker) into
`ready` or `invalid`; find them by id or name. Loading them is each modality's own (jobs/images.py,
jobs/text.py); where their bytes are is jobs/sources.py's."""
from __future__ import annotations

import logging
import os

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from core.data import DatasetUnavailable
from core.data.builtin import class_names as builtin_class_names
from core.data.scan import FILE_FORMATS, FOLDER_FORMAT, ScanOptions, scan_file
from core.data.webdataset import expand_shards, scan_shards
from core.modalities import BUILTINS, IMAGE
from jobs.ids import new_id
from jobs.modalities import REGISTER_BUILTIN
from jobs.settings import Settings
from jobs.sources import (UPLOAD_SCHEME, allowed_sources, check_uri, guarded_opener, limits, local_source,
                          project_sources)
from jobs.storage import ArtifactStore
from jobs.tables import Dataset

log = logging.getLogger(__name__)
FORMATS = (*FILE_FORMATS, FOLDER_FORMAT, "webdataset")


class DatasetNotFound(LookupError):
    pass


def register_builtin(session: Session, project_id: str, name: str) -> Dataset:
    """Register (or return the already registered) built-in dataset, with its modality's registration."""
    if name not in BUILTINS:
        raise DatasetUnavailable(f"unknown built-in dataset {name!r}; choose one of {', '.join(BUILTINS)}")
    return REGISTER_BUILTIN[BUILTINS[name]](session, project_id, name)


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


def image_arrays(result) -> dict:
    """The prepared arrays of scanned images: uint8 items and labels of each split."""
    sizes = {} if result.train.sizes is None else {  # each item's (h, w) on its canvas
        "s": result.train.sizes.numpy(), "s_test": result.test.sizes.numpy()}
    return {"x": result.train.images.numpy(), "y": result.train.labels.numpy(),
            "x_test": result.test.images.numpy(), "y_test": result.test.labels.numpy(), **sizes}


def scan(settings: Settings, store: ArtifactStore, dataset: Dataset) -> None:
    """Scan the source and set the row `ready` (counts, stats, content hash, prepared arrays) or
    `invalid` (with the reason). Image and audio sources are decoded once into an .npz of arrays."""
    options = (dataset.stats or {}).get("options", {})
    try:
        if dataset.format == "webdataset":
            opener = guarded_opener(settings, project_sources(settings, dataset.project_id))
            facts = scan_shards(expand_shards(dataset.uri), opener,
                                options.get("image_size"), limits(settings).max_pixels)
            dataset.n_items, dataset.n_test, dataset.n_classes = facts["n_items"], 0, facts["n_classes"]
            dataset.content_hash = facts["content_hash"]
            dataset.stats = {"options": options, "modality": IMAGE, **facts["stats"]}
        else:
            path = local_source(settings, store, dataset)
            result = scan_file(path, dataset.format, ScanOptions(
                limits=limits(settings), non_square_short_side=settings.store_short_side or None, **options))
            stats = {"options": options, **(dataset.stats or {}), **result.stats}
            if result.train is not None or result.arrays is not None:
                key = prepared_key(dataset.id)
                target = store.staging_path(key)
                tmp = target.with_name(f".{target.name}.part{os.getpid()}")
                try:
                    with open(tmp, "wb") as f:
                        np.savez(f, **(result.arrays if result.arrays is not None else image_arrays(result)))
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
    if ref in BUILTINS:
        return register_builtin(session, project_id, ref)
    raise DatasetNotFound(f"dataset {ref!r} not found (neither an id nor a name of this project's datasets, "
                          f"nor a built-in: {', '.join(BUILTINS)})")


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
