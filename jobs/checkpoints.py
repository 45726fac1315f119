"""Checkpoint files and rows: write every part atomically, then register; verify on load."""
from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.checkpoint import load_tree, save_tree
from jobs.ids import new_id
from jobs.storage import ArtifactStore
from jobs.tables import Checkpoint


def part_key(checkpoint_id: str, part: str) -> str:
    return f"checkpoints/{checkpoint_id}/{part}.safetensors"


def write_parts(store: ArtifactStore, checkpoint_id: str, trees: dict[str, object], manifest: dict,
                aliases: dict[str, str] | None = None) -> dict:
    """Save each part as its own safetensors file; returns {part: {key, sha256, bytes}}. An alias
    (e.g. 'teacher' for a backbone that is the EMA teacher) points at its target's file."""
    parts = {}
    for part, tree in trees.items():
        key = part_key(checkpoint_id, part)
        sha, size = save_tree(store.staging_path(key), tree, {**manifest, "part": part})
        store.commit(key)
        parts[part] = {"key": key, "sha256": sha, "bytes": size}
    for alias, target in (aliases or {}).items():
        parts[alias] = {**parts[target], "alias_of": target}
    return parts


def register(session: Session, store: ArtifactStore, *, project_id: str, job_id: str, step: int, final: bool,
             method: str, backbone: str, dataset_id: str | None, trees: dict[str, object], manifest: dict,
             aliases: dict[str, str] | None = None) -> Checkpoint:
    """Write the files, then add the row (in the caller's transaction)."""
    checkpoint_id, parts, manifest = write_files(store, step, trees, manifest, aliases)
    return add_row(session, checkpoint_id, parts, manifest, project_id=project_id, job_id=job_id, step=step,
                   final=final, method=method, backbone=backbone, dataset_id=dataset_id)


def write_files(store: ArtifactStore, step: int, trees: dict[str, object], manifest: dict,
                aliases: dict[str, str] | None = None) -> tuple[str, dict, dict]:
    """The files of a new checkpoint, outside any transaction (a slow upload must not hold the
    job's row): (id, parts, manifest). Unregistered files are collected by the GC."""
    checkpoint_id = new_id("ckpt")
    manifest = {**manifest, "checkpoint": checkpoint_id, "step": step}
    return checkpoint_id, write_parts(store, checkpoint_id, trees, manifest, aliases), manifest


def add_row(session: Session, checkpoint_id: str, parts: dict, manifest: dict, *, project_id: str, job_id: str,
            step: int, final: bool, method: str, backbone: str, dataset_id: str | None) -> Checkpoint:
    row = Checkpoint(id=checkpoint_id, project_id=project_id, job_id=job_id, step=step, final=final, method=method,
                     backbone=backbone, dataset_id=dataset_id, sha256=parts["backbone"]["sha256"],
                     bytes=sum(p["bytes"] for p in parts.values() if "alias_of" not in p), parts=parts, manifest=manifest)
    session.add(row)
    session.flush()
    return row


def load_part(store: ArtifactStore, checkpoint: Checkpoint, part: str):
    """(tree, manifest) of a part, verified against its recorded sha256."""
    info = checkpoint.parts[part]
    return load_tree(store.local_path(info["key"]), expected_sha256=info["sha256"])


def latest_with_state(session: Session, job_id: str) -> list[Checkpoint]:
    """The job's checkpoints that hold a full training state, newest first."""
    rows = session.scalars(select(Checkpoint).where(Checkpoint.job_id == job_id).order_by(Checkpoint.step.desc())).all()
    return [r for r in rows if "full" in r.parts]


def final_checkpoint(session: Session, job_id: str) -> Checkpoint | None:
    return session.scalar(select(Checkpoint).where(Checkpoint.job_id == job_id, Checkpoint.final.is_(True))
                          .order_by(Checkpoint.step.desc()))
