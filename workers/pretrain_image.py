"""An image pretrain job inside the child: load the images (or stream the shards), build the
method, train with the service's callbacks, then run the spec's evaluations on the frozen encoder."""
from __future__ import annotations

import dataclasses
import logging
import os
import socket
import time

import torch

from core import distributed
from core.data.canvas import center_cropped
from core.data.transforms import resize
from core.methods import build_resolved
from core.train import Callbacks, train, uses_sync_batchnorm
from jobs import images, lifecycle
from jobs.specs import PretrainSpec
from jobs.tables import Dataset, Job
from jobs.version import code_version
from workers.context import JobContext
from workers.evaluate_image import evaluate_encoder
from workers.health import HealthMonitor
from workers.shared_data import shared_folder, shared_images
from workers.training import ServiceCallbacks, early_outcome, job_recipe, load_resume_state, train_config

log = logging.getLogger(__name__)


def distributed_release() -> None:
    """After training, rank 0 evaluates alone: leave the process group so the others can exit."""
    import torch.distributed as dist

    if distributed.active():
        dist.destroy_process_group()


def build_method(recipe: dict, channels: int, mean, std, seed: int):
    torch.manual_seed(seed)  # the initial weights too are a function of the spec's seed
    return build_resolved(recipe, channels, mean, std)


def run_pretrain_image(ctx: JobContext, spec: PretrainSpec, raw_spec: dict, dataset_row: Dataset, device):
    canvas = None
    if images.is_streamed(dataset_row):  # WebDataset shards: batches streamed, nothing held whole
        train_set, test_set = None, None
        source = images.stream(ctx.settings, dataset_row)
        source.image_size = spec.image_size or source.image_size
        channels, image_size, n_items = source.channels, source.image_size, dataset_row.n_items
    else:
        loaded = {}
        stored = (dataset_row.stats or {}).get("stored_short_side")  # kept at their aspect: crops cut from a canvas

        def load_images():  # on the machine's first rank only (workers/shared_data.py)
            train, test = images.load(dataset_row, ctx.store, keep_canvas=True)
            if spec.image_size and not stored:
                train, test = resize(train, spec.image_size), resize(test, spec.image_size)
            loaded["sets"] = train, test
            return train.images

        source = shared_images(load_images, f"{ctx.job_id}-{ctx.attempt}", shared_folder(ctx.settings.home))
        train_set, test_set = loaded.get("sets", (None, None))
        channels, image_size, n_items = source.shape[1], source.shape[-1], len(source)
        if stored:  # evaluation and health take centre crops at the training side
            image_size = spec.image_size or dataset_row.stats["image_size"]
            canvas = (images.load_sizes(dataset_row, ctx.store), image_size)
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
        train(method, source, config, device=device, callbacks=Callbacks(), resume=load_resume_state(ctx),
              canvas=canvas)
        return None, None, None
    callbacks = ServiceCallbacks(ctx, spec, manifest, method, dataset_row.id, total)
    if spec.health_every:
        probe = (train_set.images if train_set is not None  # streamed: a head sample of the shards
                 else images.stream_eval_split(ctx.settings, dataset_row, image_size)[0].images)
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
    outcome = early_outcome(result, callbacks)
    if outcome is not None:
        return outcome
    scores = {}
    labelled = (dataset_row.stats or {}).get("labelled")
    if spec.evaluations and not labelled:  # an uncurated collection: scores come from an evaluate job
        ctx.event("log", f"evaluations skipped: dataset {dataset_row.id} has no labels; score checkpoint "
                         f"{callbacks.final_checkpoint} with an evaluate job on a labelled dataset")
    if spec.evaluations and labelled and test_set is None:  # streamed: evaluate on a bounded head sample
        train_set, test_set = images.stream_eval_split(ctx.settings, dataset_row, image_size)
    if spec.evaluations and labelled and len(test_set):
        scores = evaluate_encoder(ctx, method.downstream_encoder(), train_set, test_set, mean, std,
                                  [e.model_dump() for e in spec.evaluations], spec.seed, device,
                                  checkpoint_id=callbacks.final_checkpoint, dataset_id=dataset_row.id,
                                  method=spec.method, backbone=manifest["backbone"]["name"],
                                  compute_seconds=ctx.write(lambda s: s.get(Job, ctx.job_id).compute_seconds))
    return lifecycle.SUCCEEDED, {"step": result.step, "final_loss": result.logs.get("loss"),
                                 "checkpoint": callbacks.final_checkpoint, "scores": scores}, None


