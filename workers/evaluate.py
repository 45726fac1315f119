"""Evaluation inside the child: features from a frozen encoder (or a baseline), then protocols,
each result written as `scores` rows."""
from __future__ import annotations

import time

import torch

from core.backbones import build_backbone
from core.data.transforms import resize
from core.evaluate.features import extract_features, raw_pixels
from core.evaluate.protocols import run_protocol
from jobs import checkpoints, datasets, lifecycle, scores
from jobs.specs import EvaluateSpec
from jobs.tables import Checkpoint, Dataset, Job
from workers.context import JobContext, pick_device


def evaluate_features(ctx: JobContext, train_x, train_y, test_x, test_y, protocols: list[dict], seed: int, *,
                      dataset_id: str, checkpoint_id=None, baseline=None, method=None, backbone=None,
                      compute_seconds: float = 0.0) -> dict:
    results = {}
    for item in protocols:
        values = run_protocol(item["protocol"], train_x, train_y, test_x, test_y, seed=seed, **item.get("options", {}))
        results[item["protocol"]] = values

        def write(session, item=item, values=values):
            job = session.get(Job, ctx.job_id)
            scores.record(session, project_id=job.project_id, dataset_id=dataset_id, protocol=item["protocol"],
                          values=values, checkpoint_id=checkpoint_id, baseline=baseline, method=method,
                          backbone=backbone, eval_job_id=ctx.job_id, compute_seconds=compute_seconds,
                          options={**item.get("options", {}), "seed": seed})

        ctx.write(write)
    return results


def labelled(data):
    keep = data.labels >= 0
    return data.subset(keep.nonzero().squeeze(1)) if not bool(keep.all()) else data


def evaluate_encoder(ctx: JobContext, encoder, train_set, test_set, mean, std, protocols, seed, device, **who) -> dict:
    train_set, test_set = labelled(train_set), labelled(test_set)
    train_x = extract_features(encoder, train_set.images, mean, std, device=device)
    test_x = extract_features(encoder, test_set.images, mean, std, device=device)
    return evaluate_features(ctx, train_x, train_set.labels, test_x, test_set.labels, protocols, seed, **who)


def run_evaluate(ctx: JobContext, raw_spec: dict):
    spec = EvaluateSpec.model_validate(raw_spec)
    device = pick_device(spec.device if spec.device != "auto" else ctx.settings.device)
    dataset_row = ctx.write(lambda s: s.get(Dataset, spec.dataset))
    train_set, test_set = datasets.load(dataset_row, ctx.store)
    protocols = [p.model_dump() for p in spec.protocols]
    started = time.perf_counter()
    if spec.checkpoint == "raw-pixels":
        train_set, test_set = labelled(train_set), labelled(test_set)
        results = evaluate_features(ctx, raw_pixels(train_set.images), train_set.labels, raw_pixels(test_set.images),
                                    test_set.labels, protocols, spec.seed, dataset_id=dataset_row.id,
                                    baseline="raw-pixels", method="raw-pixels")
    elif spec.checkpoint == "random-init":
        torch.manual_seed(spec.seed)
        name = spec.backbone or "resnet18"
        encoder = build_backbone(name, in_channels=train_set.channels, image_size=train_set.image_size)
        mean, std = dataset_row.stats["mean"], dataset_row.stats["std"]
        results = evaluate_encoder(ctx, encoder, train_set, test_set, mean, std, protocols, spec.seed, device,
                                   dataset_id=dataset_row.id, baseline="random-init", method="random-init",
                                   backbone=name)
    else:
        row = ctx.write(lambda s: s.get(Checkpoint, spec.checkpoint))
        state, manifest = checkpoints.load_part(ctx.store, row, "backbone")
        config = dict(manifest["backbone"])
        encoder = build_backbone(config.pop("name"), **config)
        encoder.load_state_dict(state)
        size = manifest["input_size"][-1]
        train_set, test_set = resize(train_set, size), resize(test_set, size)
        norm = manifest["normalization"]
        pretrain = ctx.write(lambda s: s.get(Job, row.job_id).compute_seconds)
        results = evaluate_encoder(ctx, encoder, train_set, test_set, norm["mean"], norm["std"], protocols, spec.seed,
                                   device, dataset_id=dataset_row.id, checkpoint_id=row.id, method=row.method,
                                   backbone=row.backbone, compute_seconds=pretrain)
    ctx.add_compute(time.perf_counter() - started)
    return lifecycle.SUCCEEDED, {"scores": results}, None

