"""A pretrain job inside the child: load data, build the method, train with DB callbacks,
register checkpoints, then run the spec's evaluations on the frozen encoder."""
from __future__ import annotations

import logging
import time

import torch

from core.checkpoint import CorruptCheckpoint
from core.data.transforms import resize
from core.methods import build
from core.train import Callbacks, TrainConfig, train
from jobs import checkpoints, datasets, lifecycle, retention
from jobs.specs import PretrainSpec
from jobs.tables import Dataset, Job
from jobs.version import code_version
from workers.context import JobContext, pick_device
from workers.evaluate import evaluate_encoder

log = logging.getLogger(__name__)


class ServiceCallbacks(Callbacks):
    def __init__(self, ctx: JobContext, spec: PretrainSpec, manifest: dict, method, dataset_id: str, total: int):
        self.ctx, self.spec, self.manifest, self.method = ctx, spec, manifest, method
        self.dataset_id, self.total = dataset_id, total
        self.reason: str | None = None
        self.final_checkpoint: str | None = None
        self.logs: dict[str, float] = {}

    def on_log(self, step, logs):
        self.logs = dict(logs)
        self.ctx.log_metrics(step, logs, self.total)

    def should_stop(self, step):
        self.reason = self.ctx.stop_reason()
        return self.reason

    def on_checkpoint(self, step, state, final):
        if self.reason == "lease-lost":
            return  # another worker owns the job now; write nothing
        trees = {name: module.state_dict() for name, module in self.method.parts().items()}
        trees["full"] = state
        is_final = final and self.reason is None
        manifest = {**self.manifest, "metrics": self.logs}
        pruned: list[str] = []

        def write(session):
            job = session.get(Job, self.ctx.job_id)
            row = checkpoints.register(session, self.ctx.store, project_id=job.project_id, job_id=job.id, step=step,
                                       final=is_final, method=self.spec.method, backbone=self.manifest["backbone"]["name"],
                                       dataset_id=self.dataset_id, trees=trees, manifest=manifest)
            lifecycle.log_event(session, job.id, "checkpoint", f"checkpoint {row.id} at step {step}", checkpoint=row.id)
            pruned[:] = retention.prune(session, job.id, self.spec.keep_last) if self.spec.keep_last else []
            return row.id

        checkpoint_id = self.ctx.write(write)
        retention.delete_files(self.ctx.store, pruned)  # after the commit: a crash leaves files for the GC
        if final:  # the end of training, or the checkpoint a cancel stops at
            self.final_checkpoint = checkpoint_id


def prepare(spec: PretrainSpec, dataset_row: Dataset):
    """(method, train_set, test_set, config) of a pretrain spec: what the job trains, and what a
    test replays to compare an interrupted run with an uninterrupted one."""
    train_set, test_set = datasets.load(dataset_row)
    if spec.image_size:
        train_set, test_set = resize(train_set, spec.image_size), resize(test_set, spec.image_size)
    mean, std = dataset_row.stats["mean"], dataset_row.stats["std"]
    torch.manual_seed(spec.seed)  # the initial weights too are a function of the spec's seed
    method = build(spec.method, spec.backbone, in_channels=train_set.channels, image_size=train_set.image_size,
                   mean=mean, std=std, augment=spec.augment, backbone_options=spec.backbone_options,
                   **spec.method_options)
    total = spec.total_steps(len(train_set))
    config = TrainConfig(steps=total, batch_size=spec.batch_size, optimizer=spec.optimizer, lr=spec.lr,
                         weight_decay=spec.weight_decay, warmup_steps=spec.warmup_steps, seed=spec.seed,
                         precision=spec.precision, log_every=spec.log_every, checkpoint_every=spec.checkpoint_every)
    return method, train_set, test_set, config


def run_pretrain(ctx: JobContext, raw_spec: dict):
    spec = PretrainSpec.model_validate(raw_spec)
    device = pick_device(spec.device if spec.device != "auto" else ctx.settings.device)
    dataset_row = ctx.write(lambda s: s.get(Dataset, spec.dataset))
    method, train_set, test_set, config = prepare(spec, dataset_row)
    mean, std, total = dataset_row.stats["mean"], dataset_row.stats["std"], config.steps
    encoder = method.downstream_encoder()
    manifest = {"format": "darkmatter-checkpoint/1", "method": spec.method, "backbone": encoder.config,
                "feature_dim": encoder.feature_dim, "normalization": {"mean": mean, "std": std},
                "input_size": [train_set.channels, train_set.image_size, train_set.image_size],
                "spec": raw_spec, "code_version": code_version(),
                "dataset": {"id": dataset_row.id, "content_hash": dataset_row.content_hash}}
    callbacks = ServiceCallbacks(ctx, spec, manifest, method, dataset_row.id, total)
    resume = load_resume_state(ctx)
    ctx.event("log", f"training {spec.method} on {device} for {total} steps"
              + (f", resuming at step {resume['step']}" if resume else ""))
    started = time.perf_counter()
    result = train(method, train_set.images, config, device=device, callbacks=callbacks, resume=resume)
    elapsed = time.perf_counter() - started
    ctx.add_compute(elapsed)
    if result.reason in ("shutdown", "lease-lost"):
        return None, None, None
    if result.reason == "cancelled":
        return lifecycle.CANCELLED, {"step": result.step, "checkpoint": callbacks.final_checkpoint}, None
    if result.reason == "nan":
        return lifecycle.FAILED, {"step": result.step}, f"loss became non-finite at step {result.step}"
    scores = {}
    if spec.evaluations and (dataset_row.stats or {}).get("labelled"):
        scores = evaluate_encoder(ctx, method.downstream_encoder(), train_set, test_set, mean, std,
                                  [e.model_dump() for e in spec.evaluations], spec.seed, device,
                                  checkpoint_id=callbacks.final_checkpoint, dataset_id=dataset_row.id,
                                  method=spec.method, backbone=manifest["backbone"]["name"],
                                  compute_seconds=ctx.write(lambda s: s.get(Job, ctx.job_id).compute_seconds))
    return lifecycle.SUCCEEDED, {"step": result.step, "final_loss": result.logs.get("loss"),
                                 "checkpoint": callbacks.final_checkpoint, "scores": scores}, None


def load_resume_state(ctx: JobContext) -> dict | None:
    """The newest checkpoint's full training state whose file verifies; torn files are skipped."""
    rows = ctx.write(lambda s: checkpoints.latest_with_state(s, ctx.job_id))
    for row in rows:
        try:
            state, _ = checkpoints.load_part(ctx.store, row, "full")
            return state
        except (CorruptCheckpoint, FileNotFoundError, OSError) as exc:
            ctx.event("log", f"skipping checkpoint {row.id}: {exc}")
    return None
