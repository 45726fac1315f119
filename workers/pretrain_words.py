"""A word-vector pretrain job inside the child (word2vec, fastText, GloVe): count the training
split's words, train (gensim for word2vec / fastText; GloVe on its co-occurrence entries in the
one loop, on the job's device), register the vectors as a checkpoint, then evaluate: the spec's
feature protocols on mean word vectors, and the WordNet word-similarity score."""
from __future__ import annotations

import time

import torch

from core.methods import build_resolved
from core.methods.gensim_words import GensimWordVectors, StopTraining
from core.modalities import TEXT
from core.recipes import words_budget
from core.text.cooccurrence import CooccurrenceBatches, cooccurrence
from core.text.words import VocabularyTooSmall, count_words, vocabulary
from core.train import train
from jobs import lifecycle, text
from jobs.specs import PretrainSpec
from jobs.tables import Dataset, Job
from jobs.version import code_version
from workers.context import JobContext
from workers.evaluate_text import evaluate_text_encoder, record_word_similarity
from workers.training import ServiceCallbacks, job_recipe, load_resume_state, train_config


def record_recipe(ctx: JobContext, recipe: dict) -> None:
    """The recipe with its counted budget and vocabulary size, on the job row."""

    def write(session):
        session.get(Job, ctx.job_id).recipe = dict(recipe)

    ctx.write(write)


def run_pretrain_words(ctx: JobContext, spec: PretrainSpec, raw_spec: dict, dataset_row: Dataset, device):
    train_set, test_set = text.load_splits(ctx.settings, ctx.store, dataset_row)
    recipe = job_recipe(ctx, spec, 0, len(train_set))
    options = recipe["method_options"]
    try:
        words = vocabulary(count_words(train_set.texts), options["min_count"])
    except VocabularyTooSmall as exc:
        return lifecycle.FAILED, {}, str(exc)
    recipe["backbone_options"]["vocab_size"] = len(words)
    torch.manual_seed(spec.seed)  # GloVe's initial vectors are a function of the spec's seed
    method = build_resolved(recipe)
    gensim = isinstance(method, GensimWordVectors)
    if gensim:
        words_budget(recipe, len(train_set))  # progress counts documents; gensim runs whole epochs
    else:
        method.backbone.set_vocabulary(words)
        try:
            entries = CooccurrenceBatches(*cooccurrence(train_set.texts, method.backbone.index, options["window"]))
        except ValueError as exc:
            return lifecycle.FAILED, {}, str(exc)
        words_budget(recipe, entries.steps_per_epoch(recipe["train"]["batch_size"]))
    record_recipe(ctx, recipe)
    config = train_config(recipe)
    encoder = method.downstream_encoder()
    manifest = {"format": "darkmatter-checkpoint/1", "method": spec.method, "modality": TEXT,
                "backbone": encoder.config, "feature_dim": encoder.feature_dim, "max_length": None,
                "tokenizer": {**recipe["tokenizer"], "vocab_size": len(words)},
                "spec": raw_spec, "recipe": recipe, "code_version": code_version(),
                "dataset": {"id": dataset_row.id, "content_hash": dataset_row.content_hash}}
    callbacks = ServiceCallbacks(ctx, spec, manifest, method, dataset_row.id, config.steps)
    ctx.event("log", f"training {spec.method} on {'cpu (gensim)' if gensim else device}: {len(words)} words seen "
              f"{options['min_count']}+ times, {recipe['epochs']} epochs"
              + ("" if gensim else f", {len(entries)} co-occurrence entries, {config.steps} steps"))
    started = time.perf_counter()
    if gensim:
        status = fit_gensim(ctx, method, train_set.texts, recipe, callbacks)
    else:
        result = train(method, entries, config, device=device, callbacks=callbacks, resume=load_resume_state(ctx))
        status = result.reason, result.step, result.logs
    ctx.add_compute(time.perf_counter() - started)
    reason, step, logs = status
    if reason in ("shutdown", "lease-lost"):
        return None, None, None
    if reason == "cancelled":
        return lifecycle.CANCELLED, {"step": step, "checkpoint": callbacks.final_checkpoint}, None
    if reason == "nan":
        return lifecycle.FAILED, {"step": step}, f"loss became non-finite at step {step}"
    encoder = method.downstream_encoder().cpu()
    compute = ctx.write(lambda s: s.get(Job, ctx.job_id).compute_seconds)
    who = dict(dataset_id=dataset_row.id, checkpoint_id=callbacks.final_checkpoint, method=spec.method,
               backbone=encoder.config["name"], compute_seconds=compute)
    results = {}
    if spec.evaluations and (dataset_row.stats or {}).get("labelled") and len(test_set):
        results.update(evaluate_text_encoder(ctx, encoder, train_set, test_set,
                                             [e.model_dump() for e in spec.evaluations], spec.seed, "cpu", **who))
    results.update(record_word_similarity(ctx, encoder.words, encoder.word_matrix().detach(), spec.seed, **who))
    return lifecycle.SUCCEEDED, {"step": step, "final_loss": logs.get("loss"), "vocabulary": len(words),
                                 "checkpoint": callbacks.final_checkpoint, "scores": results}, None


def fit_gensim(ctx: JobContext, method: GensimWordVectors, texts: list[str], recipe: dict,
               callbacks: ServiceCallbacks) -> tuple[str, int, dict]:
    """gensim's run with the service's per-epoch hooks: metrics, and the cancel / shutdown check
    (a stopped run keeps no checkpoint: gensim's half-trained state is not carried over, and a
    retried job trains again from the start, to the same vectors: one thread, the spec's seed)."""
    per_epoch, train_cfg = recipe["steps_per_epoch"], recipe["train"]
    stopped: list[str] = []

    def on_epoch(epoch: int, logs: dict) -> None:
        callbacks.on_log(epoch * per_epoch, logs)
        reason = callbacks.should_stop(epoch * per_epoch)
        if reason:
            stopped.append(reason)
            raise StopTraining(reason)

    try:
        logs = method.fit(texts, train_cfg["lr"], train_cfg["final_lr"], int(recipe["epochs"]), train_cfg["seed"],
                          on_epoch)
    except StopTraining:
        return stopped[0], 0, {}
    step = train_cfg["steps"]
    state = {"method": method.state_dict(), "step": step, "hparams": dict(method.hparams)}
    callbacks.on_checkpoint(step, state, final=True)
    return "completed", step, logs
