"""What every pretrain job shares, whatever its modality: the service's training callbacks
(metrics, stop checks, checkpoints written in the background and registered under the job's
lease), the job's resolved recipe, and the state a retried job resumes from."""
from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor

import torch

from core import distributed
from core.train import Callbacks, TrainConfig
from jobs import checkpoints, lifecycle, retention
from jobs.specs import PretrainSpec
from jobs.tables import Job
from workers.context import JobContext

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


def load_resume_state(ctx: JobContext) -> dict | None:
    """The full training state of the newest checkpoint whose file verifies (torn files are
    skipped), the same on every rank: rank 0 chooses, the others load its choice."""
    rows = {row.id: row for row in ctx.read(lambda s: checkpoints.latest_with_state(s, ctx.job_id))}

    def read(checkpoint_id):  # CorruptCheckpoint is a ValueError: rank 0 skips it
        return checkpoints.load_part(ctx.store, rows[checkpoint_id], "full")[0]

    _, state = distributed.agreed_resume(list(rows), read,
                                         lambda checkpoint_id, exc: ctx.event("log", f"skipping checkpoint {checkpoint_id}: {exc}"))
    return state


def early_outcome(result, callbacks: ServiceCallbacks):
    """The job's outcome (state, result, error) when training ended before its last step, for
    any modality; None when it completed. (None, None, None): the process is going away
    (shutdown, lease lost) and the job stays for the next attempt."""
    if result.reason in ("shutdown", "lease-lost"):
        return None, None, None
    if result.reason == "cancelled":
        return lifecycle.CANCELLED, {"step": result.step, "checkpoint": callbacks.final_checkpoint}, None
    if result.reason == "collapsed":
        return lifecycle.FAILED, {"step": result.step}, (f"stopped at step {result.step}: the representation "
                                                         "collapsed (stop_on_collapse; see the collapse event)")
    if result.reason == "nan":
        return lifecycle.FAILED, {"step": result.step}, f"loss became non-finite at step {result.step}"
    return None
