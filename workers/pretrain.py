"""A pretrain job inside the child: load data, build the method, train with DB callbacks,
register checkpoints, then run the spec's evaluations on the frozen encoder."""
from __future__ import annotations

import dataclasses
import logging
import os
import socket
import time
from concurrent.futures import Future, ThreadPoolExecutor

import torch

from core import distributed
from core.data.canvas import center_cropped
from core.data.transforms import resize
from core.methods import build_resolved
from core.train import Callbacks, TrainConfig, train, uses_sync_batchnorm
from jobs import checkpoints, datasets, lifecycle, retention
from jobs.specs import PretrainSpec
from jobs.tables import Dataset, Job
from jobs.version import code_version
from workers.context import JobContext, pick_device
from workers.evaluate import evaluate_encoder
from workers.health import HealthMonitor
from workers.shared_data import shared_folder, shared_images

log = logging.getLogger(__name__)


class ServiceCallbacks(Callbacks):
    def __init__(self, ctx: JobContext, spec: PretrainSpec, manifest: dict, method, dataset_id: str, total: int):
        self.ctx, self.spec, self.manifest, self.method = ctx, spec, manifest, method
        self.dataset_id, self.total = dataset_id, total
        self.reason: str | None = None
        self.final_checkpoint: str | None = None
        self.health = None  # a workers.health.HealthMonitor when the spec asks for health_every
        self.logs: dict[str, float] = {}
        self._writer: ThreadPoolExecutor | None = None
        self._pending: Future | None = None

    def on_log(self, step, logs):
        self.logs = dict(logs)
        self.ctx.log_metrics(step, logs, self.total)

    def should_stop(self, step):
        self.reason = self.ctx.stop_reason() or (self.health.check(step) if self.health else None)
        return self.reason

    def on_checkpoint(self, step, state, final):
        """Snapshot the state (a copy on the CPU, taken between steps) and write it in the
        background while training goes on, one write in flight at most; the final checkpoint
        (whose id is the job's result) is written before returning."""
        if self.reason == "lease-lost":
            return  # another worker owns the job now; write nothing
        trees, aliases, first_name = {}, {}, {}
        for name, module in self.method.parts().items():  # a module under two names is saved once
            if id(module) in first_name:
                aliases[name] = first_name[id(module)]
            else:
                first_name[id(module)] = name
                trees[name] = module.state_dict()
        trees["full"] = state
        snapshot = _snapshot(trees)
        is_final = final and self.reason is None
        manifest = {**self.manifest, "metrics": dict(self.logs)}
        self.flush()  # the previous write, and its error if it had one
        if final:  # the end of training, or the checkpoint a cancel stops at
            self.final_checkpoint = self._commit(step, snapshot, aliases, manifest, is_final)
        else:
            if self._writer is None:
                self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="checkpoint")
            self._pending = self._writer.submit(self._commit, step, snapshot, aliases, manifest, is_final)

    def flush(self) -> None:
        """Wait for the checkpoint being written; raises its error (the job is then retried)."""
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()

    def around(self, run_training):
        """run_training(), then the write in flight completes before anything else (its error is
        raised, unless training raised first)."""
        try:
            result = run_training()
        finally:
            if self._writer is not None:
                self._writer.shutdown(wait=True)
                self._writer = None
        self.flush()
        return result

    def _commit(self, step, trees, aliases, manifest, is_final) -> str:
        pruned: list[str] = []

        def files():  # written before the transaction: the lease's row lock is held for milliseconds
            return checkpoints.write_files(self.ctx.store, step, trees, manifest, aliases)

        written = self.ctx.with_storage_retries(files)

        def write(session):
            job = session.get(Job, self.ctx.job_id)
            row = checkpoints.add_row(session, *written, project_id=job.project_id, job_id=job.id, step=step,
                                      final=is_final, method=self.spec.method,
                                      backbone=self.manifest["backbone"]["name"], dataset_id=self.dataset_id)
            lifecycle.log_event(session, job.id, "checkpoint", f"checkpoint {row.id} at step {step}", checkpoint=row.id)
            pruned[:] = retention.prune(session, job.id, self.spec.keep_last) if self.spec.keep_last else []
            return row.id

        checkpoint_id = self.ctx.write(write)
        retention.delete_files(self.ctx.store, pruned)  # after the commit: a crash leaves files for the GC
        return checkpoint_id


def _snapshot(tree):
    """A copy of every tensor of a nested dict/list on the CPU: training may change the originals."""
    if isinstance(tree, torch.Tensor):
        return tree.detach().to("cpu", copy=True)
    if isinstance(tree, dict):
        return {k: _snapshot(v) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(_snapshot(v) for v in tree)
    return tree


def distributed_release() -> None:
    """After training, rank 0 evaluates alone: leave the process group so the others can exit."""
    import torch.distributed as dist

    if distributed.active():
        dist.destroy_process_group()


def build_method(recipe: dict, channels: int, mean, std, seed: int):
    torch.manual_seed(seed)  # the initial weights too are a function of the spec's seed
    return build_resolved(recipe, channels, mean, std)


def train_config(recipe: dict) -> TrainConfig:
    return TrainConfig(**recipe["train"])


def job_recipe(ctx: JobContext, spec: PretrainSpec, image_size: int, n_items: int) -> dict:
    """The recipe resolved when the job was submitted (jobs.recipe); a job queued before
    recipes were recorded resolves it now and records it."""

    def read_or_record(session):
        job = session.get(Job, ctx.job_id)
        if job.recipe is None:
            job.recipe = spec.resolve(image_size, n_items)
        return job.recipe

    return ctx.write(read_or_record)


def run_pretrain(ctx: JobContext, raw_spec: dict):
    spec = PretrainSpec.model_validate(raw_spec)
    device = pick_device(spec.device if spec.device != "auto" else ctx.settings.device)
    dataset_row = ctx.write(lambda s: s.get(Dataset, spec.dataset))
    if (dataset_row.stats or {}).get("modality") == "text":
        from workers.pretrain_text import run_pretrain_text

        return run_pretrain_text(ctx, spec, raw_spec, dataset_row, device)
    canvas = None
    if datasets.is_streamed(dataset_row):  # WebDataset shards: batches streamed, nothing held whole
        train_set, test_set = None, None
        source = datasets.stream(ctx.settings, dataset_row)
        source.image_size = spec.image_size or source.image_size
        channels, image_size, n_items = source.channels, source.image_size, dataset_row.n_items
    else:
        loaded = {}
        stored = (dataset_row.stats or {}).get("stored_short_side")  # kept at their aspect: crops cut from a canvas

        def load_images():  # on the machine's first rank only (workers/shared_data.py)
            train, test = datasets.load(dataset_row, ctx.store, keep_canvas=True)
            if spec.image_size and not stored:
                train, test = resize(train, spec.image_size), resize(test, spec.image_size)
            loaded["sets"] = train, test
            return train.images

        source = shared_images(load_images, f"{ctx.job_id}-{ctx.attempt}", shared_folder(ctx.settings.home))
        train_set, test_set = loaded.get("sets", (None, None))
        channels, image_size, n_items = source.shape[1], source.shape[-1], len(source)
        if stored:  # evaluation and health take centre crops at the training side
            image_size = spec.image_size or dataset_row.stats["image_size"]
            canvas = (datasets.load_sizes(dataset_row, ctx.store), image_size)
            if train_set is not None:
                train_set, test_set = center_cropped(train_set, image_size), center_cropped(test_set, image_size)
        elif train_set is not None:  # evaluation reads the machine's one copy too
            train_set = dataclasses.replace(train_set, images=source)
    ctx.beat()
    mean, std = dataset_row.stats["mean"], dataset_row.stats["std"]  # the scan's stats: normalisation defaults
    recipe = job_recipe(ctx, spec, image_size, n_items)
    method = build_method(recipe, channels, mean, std, spec.seed)
    config = train_config(recipe)
    if "checkpoint_seconds" not in recipe["train"]:  # the service's default, so that a retry repeats little
        config.checkpoint_seconds = ctx.settings.checkpoint_seconds
    total = config.steps
    encoder = method.downstream_encoder()
    world = distributed.world_size()
    manifest = {"format": "darkmatter-checkpoint/1", "method": spec.method, "backbone": encoder.config,
                "feature_dim": encoder.feature_dim, "normalization": {"mean": mean, "std": std},
                "input_size": [channels, image_size, image_size],
                "spec": raw_spec, "recipe": recipe, "code_version": code_version(),
                "dataset": {"id": dataset_row.id, "content_hash": dataset_row.content_hash},
                "distributed": {"world_size": world, "global_batch": config.batch_size,
                                "per_device_batch": config.batch_size // world, "lr": config.lr,
                                "sync_batchnorm": world > 1 and uses_sync_batchnorm(method, config)}}
    if ctx.rank != 0:  # the other ranks train and write nothing
        train(method, source, config, device=device, callbacks=Callbacks(), resume=load_resume_state(ctx), canvas=canvas)
        return None, None, None
    callbacks = ServiceCallbacks(ctx, spec, manifest, method, dataset_row.id, total)
    if spec.health_every:
        probe = (train_set.images if train_set is not None  # streamed: a head sample of the shards
                 else datasets.stream_eval_split(ctx.settings, dataset_row, image_size)[0].images)
        callbacks.health = HealthMonitor(ctx, method, probe, mean, std, device, spec.health_every,
                                         spec.stop_on_collapse, total)
    resume = load_resume_state(ctx)
    ctx.beat()
    for note in recipe.get("adjustments", []):
        ctx.event("log", note)
    where = device if world == 1 else f"{world} processes ({device.type}; rank 0 is pid {os.getpid()} on {socket.gethostname()})"
    ctx.event("log", f"training {spec.method} on {where} for {total} steps"
              + (f", resuming at step {resume['step']}" if resume else ""))
    started = time.perf_counter()
    result = callbacks.around(lambda: train(method, source, config, device=device, callbacks=callbacks, resume=resume,
                                            canvas=canvas))
    elapsed = time.perf_counter() - started
    ctx.add_compute(elapsed * world)  # every device's time
    distributed_release()
    if result.reason in ("shutdown", "lease-lost"):
        return None, None, None
    if result.reason == "cancelled":
        return lifecycle.CANCELLED, {"step": result.step, "checkpoint": callbacks.final_checkpoint}, None
    if result.reason == "collapsed":
        return lifecycle.FAILED, {"step": result.step}, (f"stopped at step {result.step}: the representation "
                                                         "collapsed (stop_on_collapse; see the collapse event)")
    if result.reason == "nan":
        return lifecycle.FAILED, {"step": result.step}, f"loss became non-finite at step {result.step}"
    scores = {}
    labelled = (dataset_row.stats or {}).get("labelled")
    if spec.evaluations and not labelled:  # an uncurated collection: scores come from an evaluate job
        ctx.event("log", f"evaluations skipped: dataset {dataset_row.id} has no labels; score checkpoint "
                         f"{callbacks.final_checkpoint} with an evaluate job on a labelled dataset")
    if spec.evaluations and labelled and test_set is None:  # streamed: evaluate on a bounded head sample
        train_set, test_set = datasets.stream_eval_split(ctx.settings, dataset_row, image_size)
    if spec.evaluations and labelled and len(test_set):
        scores = evaluate_encoder(ctx, method.downstream_encoder(), train_set, test_set, mean, std,
                                  [e.model_dump() for e in spec.evaluations], spec.seed, device,
                                  checkpoint_id=callbacks.final_checkpoint, dataset_id=dataset_row.id,
                                  method=spec.method, backbone=manifest["backbone"]["name"],
                                  compute_seconds=ctx.write(lambda s: s.get(Job, ctx.job_id).compute_seconds))
    return lifecycle.SUCCEEDED, {"step": result.step, "final_loss": result.logs.get("loss"),
                                 "checkpoint": callbacks.final_checkpoint, "scores": scores}, None


def load_resume_state(ctx: JobContext) -> dict | None:
    """The full training state of the newest checkpoint whose file verifies (torn files are
    skipped), the same on every rank: rank 0 chooses, the others load its choice."""
    rows = {row.id: row for row in ctx.read(lambda s: checkpoints.latest_with_state(s, ctx.job_id))}

    def read(checkpoint_id):  # CorruptCheckpoint is a ValueError: rank 0 skips it
        return checkpoints.load_part(ctx.store, rows[checkpoint_id], "full")[0]

    _, state = distributed.agreed_resume(list(rows), read,
                                         lambda checkpoint_id, exc: ctx.event("log", f"skipping checkpoint {checkpoint_id}: {exc}"))
    return state
