"""An audio pretrain job inside the child: load the clips, build the method from its resolved recipe,
train it on padded int16 batches in the one loop with the service's callbacks, then run the spec's
feature protocols on the frozen encoder's mean-pooled frames."""
from __future__ import annotations

import time

import torch

from core.data.audio import SAMPLE_RATE
from core.methods.wav2vec2 import build_audio
from core.modalities import AUDIO
from core.train import train
from jobs import audio, lifecycle
from jobs.specs import PretrainSpec
from jobs.tables import Dataset, Job
from jobs.version import code_version
from workers.context import JobContext
from workers.evaluate_audio import evaluate_audio_encoder
from workers.training import ServiceCallbacks, early_outcome, job_recipe, load_resume_state, train_config

# clips are cut here for training: fairseq's max_sample_size for wav2vec 2.0 pretraining (250k samples, 15.6 s)
MAX_TRAIN_SAMPLES = 250_000


def run_pretrain_audio(ctx: JobContext, spec: PretrainSpec, raw_spec: dict, dataset_row: Dataset, device):
    train_set, test_set = audio.load_splits(ctx.store, dataset_row)
    ctx.beat()
    recipe = job_recipe(ctx, spec, 0, len(train_set))
    torch.manual_seed(spec.seed)  # the initial weights are a function of the spec's seed
    method = build_audio(recipe)
    encoder = method.downstream_encoder()
    clips = train_set.padded(MAX_TRAIN_SAMPLES)
    config = train_config(recipe)
    if "checkpoint_seconds" not in recipe["train"]:  # the service's default, so that a retry repeats little
        config.checkpoint_seconds = ctx.settings.checkpoint_seconds
    manifest = {"format": "darkmatter-checkpoint/1", "method": spec.method, "modality": AUDIO,
                "backbone": encoder.config, "feature_dim": encoder.feature_dim, "sample_rate": SAMPLE_RATE,
                "max_train_samples": MAX_TRAIN_SAMPLES, "spec": raw_spec, "recipe": recipe,
                "code_version": code_version(),
                "dataset": {"id": dataset_row.id, "content_hash": dataset_row.content_hash}}
    callbacks = ServiceCallbacks(ctx, spec, manifest, method, dataset_row.id, config.steps)
    resume = load_resume_state(ctx)
    for note in recipe.get("adjustments", []):
        ctx.event("log", note)
    ctx.event("log", f"training {spec.method} on {device} for {config.steps} steps: {len(train_set)} clips, "
              f"{float(train_set.lengths.sum()) / SAMPLE_RATE:.0f} s of audio, batches of {clips.shape[1]} samples"
              + (f", resuming at step {resume['step']}" if resume else ""))
    started = time.perf_counter()
    result = callbacks.around(lambda: train(method, clips, config, device=device, callbacks=callbacks, resume=resume))
    ctx.add_compute(time.perf_counter() - started)
    outcome = early_outcome(result, callbacks)
    if outcome is not None:
        return outcome
    scores = {}
    labelled = (dataset_row.stats or {}).get("labelled")
    if spec.evaluations and not labelled:
        ctx.event("log", f"evaluations skipped: dataset {dataset_row.id} has no labels")
    if spec.evaluations and labelled and len(test_set):
        scores = evaluate_audio_encoder(
            ctx, encoder, train_set, test_set, [e.model_dump() for e in spec.evaluations], spec.seed, device,
            dataset_id=dataset_row.id, checkpoint_id=callbacks.final_checkpoint, method=spec.method,
            backbone=encoder.config["name"], compute_seconds=ctx.write(lambda s: s.get(Job, ctx.job_id).compute_seconds))
    return lifecycle.SUCCEEDED, {"step": result.step, "final_loss": result.logs.get("loss"),
                                 "checkpoint": callbacks.final_checkpoint, "scores": scores}, None
