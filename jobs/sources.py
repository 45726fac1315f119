"""Where a dataset's bytes are, and who may read them: the URIs a project may register, the check
a worker makes before opening one, and the local copy of an upload or an s3:// object. Shared by
every modality's datasets."""
from __future__ import annotations

import os
from pathlib import Path

from sqlalchemy.orm import Session

from core.data.archives import Limits
from core.data.errors import DatasetUnavailable
from core.data.webdataset import count_shards, expand_shards, fsspec_opener
from jobs.settings import Settings
from jobs.storage import ArtifactStore
from jobs.tables import DEFAULT_PROJECT, Dataset, Project

UPLOAD_SCHEME = "upload://"


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
