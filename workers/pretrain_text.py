"""A text pretrain job inside the child: train the tokenizer on the job's corpus (or reuse a
checkpoint's), tokenise, train the method in the one loop on length-bucketed batches, then
evaluate: masked-token accuracy and perplexity on held-out text against the unigram model, and
the spec's feature protocols on the frozen encoder's text embeddings."""
from __future__ import annotations

import time

import torch

from core.data.text_batches import TokenBatches, TokenizedCorpus
from core.evaluate.text import masked_token_scores, unigram_counts
from core.methods import build_resolved
from core.modalities import TEXT
from core.text.tokenizer import fingerprint, from_bytes, to_bytes, train_tokenizer
from core.train import train
from jobs import checkpoints, lifecycle, scores, text
from jobs.specs import PretrainSpec
from jobs.tables import Checkpoint, Dataset, Job
from jobs.version import code_version
from workers.context import JobContext
from workers.evaluate_text import evaluate_text_encoder, subword_word_similarity
from workers.training import ServiceCallbacks, early_outcome, job_recipe, load_resume_state, train_config

TOKENIZER_KEY = "backbone.tokenizer_bytes"


def job_tokenizer(ctx: JobContext, recipe: dict, texts: list[str], resume: dict | None):
    """The run's tokenizer: from the state it resumes (so the corpus is tokenised exactly as
    before), from the checkpoint the spec names, or trained now on the training split."""
    if resume is not None:
        return from_bytes(resume["method"][TOKENIZER_KEY].numpy().tobytes())
    options = recipe["tokenizer"]
    if options.get("checkpoint"):
        row = ctx.write(lambda s: s.get(Checkpoint, options["checkpoint"]))
        state, _ = checkpoints.load_part(ctx.store, row, "backbone")
        ctx.event("log", f"tokenizer from checkpoint {row.id}")
        return from_bytes(state["tokenizer_bytes"].numpy().tobytes())
    started = time.perf_counter()
    tokenizer = train_tokenizer(texts, options["vocab_size"], options["kind"], options["lowercase"])
    ctx.event("log", f"trained a {options['kind']} tokenizer of {tokenizer.get_vocab_size()} tokens on "
              f"{len(texts)} documents in {time.perf_counter() - started:.1f}s")
    return tokenizer


def run_pretrain_text(ctx: JobContext, spec: PretrainSpec, raw_spec: dict, dataset_row: Dataset, device):
    train_set, test_set = text.load_splits(ctx.settings, ctx.store, dataset_row)
    recipe = job_recipe(ctx, spec, 0, len(train_set))
    resume = load_resume_state(ctx)
    tokenizer = job_tokenizer(ctx, recipe, train_set.texts, resume)
    torch.manual_seed(spec.seed)  # the initial weights are a function of the spec's seed
    method = build_resolved(recipe)
    encoder = method.downstream_encoder()
    encoder.set_tokenizer(tokenizer)
    corpus = TokenizedCorpus.from_texts(tokenizer, train_set.texts, encoder.max_length)
    config = train_config(recipe)
    manifest = {"format": "darkmatter-checkpoint/1", "method": spec.method, "modality": TEXT,
                "backbone": encoder.config, "feature_dim": encoder.feature_dim, "max_length": encoder.max_length,
                "tokenizer": {**{k: v for k, v in recipe["tokenizer"].items() if k != "checkpoint"},
                              "vocab_size": tokenizer.get_vocab_size(),
                              "sha256": fingerprint(to_bytes(tokenizer))},
                "spec": raw_spec, "recipe": recipe, "code_version": code_version(),
                "dataset": {"id": dataset_row.id, "content_hash": dataset_row.content_hash}}
    callbacks = ServiceCallbacks(ctx, spec, manifest, method, dataset_row.id, config.steps)
    for note in recipe.get("adjustments", []):
        ctx.event("log", note)
    ctx.event("log", f"training {spec.method} on {device} for {config.steps} steps: {len(corpus)} documents, "
              f"{corpus.n_tokens()} tokens, {corpus.truncated} cut to {encoder.max_length}"
              + (f", resuming at step {resume['step']}" if resume else ""))
    started = time.perf_counter()
    result = callbacks.around(lambda: train(method, TokenBatches(corpus), config, device=device, callbacks=callbacks,
                                            resume=resume))
    ctx.add_compute(time.perf_counter() - started)
    outcome = early_outcome(result, callbacks)
    if outcome is not None:
        return outcome
    results = {}
    if len(test_set) and hasattr(method, "head"):  # an MLM head: mlm, mlm+simcse
        results.update(record_masked_tokens(ctx, method, corpus, test_set.texts, spec, callbacks, device))
    if spec.evaluations and (dataset_row.stats or {}).get("labelled") and len(test_set):
        results.update(evaluate_text_encoder(
            ctx, encoder, train_set, test_set, [e.model_dump() for e in spec.evaluations], spec.seed, device,
            dataset_id=dataset_row.id, checkpoint_id=callbacks.final_checkpoint, method=spec.method,
            backbone=encoder.config["name"], compute_seconds=ctx.write(lambda s: s.get(Job, ctx.job_id).compute_seconds)))
    results.update(subword_word_similarity(
        ctx, encoder, spec.seed, dataset_id=dataset_row.id, checkpoint_id=callbacks.final_checkpoint,
        method=spec.method, backbone=encoder.config["name"],
        compute_seconds=ctx.write(lambda s: s.get(Job, ctx.job_id).compute_seconds)))
    return lifecycle.SUCCEEDED, {"step": result.step, "final_loss": result.logs.get("loss"),
                                 "checkpoint": callbacks.final_checkpoint, "scores": results}, None


def record_masked_tokens(ctx: JobContext, method, corpus: TokenizedCorpus, held_out: list[str], spec: PretrainSpec,
                         callbacks: ServiceCallbacks, device) -> dict:
    """Masked-token accuracy / perplexity of the final model and of the unigram baseline on the
    test split, as `scores` rows of protocol 'mlm'."""
    encoder = method.downstream_encoder()
    test_corpus = TokenizedCorpus.from_texts(encoder.tokenizer, held_out, encoder.max_length)
    values = masked_token_scores(encoder, method.head, test_corpus, unigram_counts(corpus, encoder.vocab_size),
                                 seed=spec.seed, device=device)
    values = {who: {k: float(f"{v:.7g}") for k, v in row.items()} for who, row in values.items()}  # no float32 tails
    options = {"select_prob": 0.15, "replace": "all [MASK]", "seed": spec.seed}

    def write(session):
        job = session.get(Job, ctx.job_id)
        scores.record(session, project_id=job.project_id, dataset_id=spec.dataset, protocol="mlm",
                      values=values["model"], checkpoint_id=callbacks.final_checkpoint, method=spec.method,
                      backbone=encoder.config["name"], eval_job_id=ctx.job_id, options=options,
                      compute_seconds=job.compute_seconds)
        scores.record(session, project_id=job.project_id, dataset_id=spec.dataset, protocol="mlm",
                      values=values["unigram"], baseline="unigram", method="unigram", eval_job_id=ctx.job_id,
                      options=options)

    ctx.write(write)
    return {"mlm": values["model"], "mlm-unigram": values["unigram"]}
