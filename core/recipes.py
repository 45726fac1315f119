"""The one resolver that turns (method, dataset, spec overrides) into every value a run uses, from
the method's recipes (core/methods/recipe.py: what each method file declares per scale)."""
from __future__ import annotations

import logging
import math
from dataclasses import replace

from core.augment import ViewConfig
from core.methods.recipe import SCALES, SMALL_MAX_SIDE, Recipe, recipe_fields, scale_for
from core.methods import registry
from core.modalities import IMAGE, TEXT, WORDS

__all__ = ["OPTIMIZER_OPTIONS", "OVERRIDABLE", "SCALES", "SMALL_MAX_SIDE", "Recipe", "epoch_point", "recipe_fields",
           "resolve", "scale_for", "scaled_lr", "words_budget"]

logger = logging.getLogger(__name__)


# The fields a spec may override, beyond the budget (epochs / steps) and the views.
OVERRIDABLE = ("backbone", "optimizer", "base_lr", "lr", "batch_size", "warmup_epochs", "warmup_steps", "final_lr",
               "weight_decay", "final_weight_decay", "grad_clip", "grad_clip_mode", "freeze_last_layer_epochs",
               "lr_groups")
OPTIMIZER_OPTIONS = ("momentum", "betas", "eta", "clip_lr", "exclude_bias_n_norm")
SCHEDULE_POINTS = ("absolute", "proportional")
MAX_DATASET_OPTION = 2**21  # DeepCluster-v2's bank of 2 x 128 floats per image: 2 GiB at most


def resolve(method: str, image_size: int, n_items: int, overrides: dict | None = None) -> dict:
    """Every value a run uses: the method's recipe for the image scale, with the spec's explicit
    fields on top. `overrides` holds only what the user set (None values are ignored):
    scale, epochs | steps, any OVERRIDABLE name, optimizer_options, backbone_options,
    method_options, augment, schedule_points; for a text method, tokenizer (its vocab_size sizes
    the embedding). Returns a JSON-able dict; `train` holds TrainConfig's fields.

    Schedule points (warm-up, frozen last layer, epoch_options) are absolute epochs of the run,
    capped at its length; with schedule_points "proportional" the recipe's own points keep their
    fraction of the recipe's epochs in a shorter run (10 warm-up epochs of 1000 are 1 % of it).
    A spec that changes the optimizer must give lr or base_lr: the recipe's LR is meant for its
    own optimizer (SimCLR's LARS 0.3 x batch/256 is no AdamW LR)."""
    info = registry.method_info(method)
    given = {k: v for k, v in (overrides or {}).items() if v is not None}
    text = info.modality == TEXT
    scale = given.get("scale") or (next(iter(info.recipes)) if text else scale_for(image_size))
    if scale not in info.recipes:
        raise ValueError(f"{method} has no {scale!r} recipe; it has {', '.join(sorted(info.recipes))}")
    recipe = own = info.recipes[scale]
    if given.get("optimizer", own.optimizer) != own.optimizer and not {"lr", "base_lr"} & set(given):
        raise ValueError(f"optimizer {given['optimizer']!r} replaces the recipe's {own.optimizer!r}, whose LR "
                         f"(base_lr {own.base_lr}) is meant for {own.optimizer}: give lr or base_lr as well")
    points = given.get("schedule_points", "absolute")
    if points not in SCHEDULE_POINTS:
        raise ValueError(f"schedule_points {points!r}: choose one of {', '.join(SCHEDULE_POINTS)}")
    unknown = set(given.get("optimizer_options", {})) - set(OPTIMIZER_OPTIONS)
    if unknown:
        raise ValueError(f"unknown optimizer_options: {', '.join(sorted(unknown))}; "
                         f"known: {', '.join(OPTIMIZER_OPTIONS)}")
    recipe = replace(recipe, **{k: given[k] for k in OVERRIDABLE if k in given and hasattr(recipe, k)},
                     **given.get("optimizer_options", {}))
    backbone_options = dict(recipe.backbone_options) if recipe.backbone == info.recipes[scale].backbone else {}
    backbone_options.update(given.get("backbone_options", {}))
    method_options = {**info.options(), **recipe.method_options, **given.get("method_options", {})}
    views = ViewConfig.from_dict(given.get("augment"), base=recipe.views)
    if text and given.get("augment"):
        raise ValueError(f"{method} is a text method: it takes no image augmentations")

    batch, notes = recipe.batch_size, []
    words = text and recipe.tokenizer.get("kind") == WORDS
    if batch > n_items and not words:
        if "batch_size" in given:
            raise ValueError(f"batch_size {batch} (set in the spec) is larger than the dataset ({n_items} items)")
        if n_items < 2:
            raise ValueError(f"the dataset has {n_items} item(s): training needs at least 2")
        notes.append(f"batch_size capped to the dataset: {n_items} (the {scale!r} recipe's is {batch})")
        logger.info("%s: %s", method, notes[-1])
        batch = n_items
    steps_per_epoch = max(1, n_items // batch)
    if "steps" in given and "epochs" in given:
        raise ValueError("give epochs or steps, not both")
    total = given["steps"] if "steps" in given else given.get("epochs", recipe.epochs) * steps_per_epoch
    if words:  # word vectors count their steps once the corpus's words are counted (words_budget)
        if "steps" in given:
            raise ValueError(f"{method} trains whole passes over the corpus: give epochs, not steps")
        if given.get("tokenizer"):
            raise ValueError(f"{method} splits words itself (core.text.words): it takes no tokenizer")
        schedule = [name for name in ("warmup_epochs", "freeze_last_layer_epochs") if name in given]
        if schedule:
            raise ValueError(f"{', '.join(schedule)}: {method} has no epoch-based schedule points (warmup_steps is "
                             "taken)")
        total, steps_per_epoch = 0, 0
    lr = given["lr"] if "lr" in given else scaled_lr(recipe.base_lr, batch, recipe.lr_scaling)
    # the recipe's final LR is a point of its own schedule: it follows the peak (Barlow Twins' 0.001 x peak)
    final_lr = recipe.final_lr if "final_lr" in given or not own.final_lr else (
        own.final_lr * lr / scaled_lr(own.base_lr, own.batch_size, own.lr_scaling))

    def schedule_point(epochs: float, given_here: bool) -> int:
        # proportional: only the recipe's own points scale with the run's length; a spec's value counts epochs
        horizon = recipe.epochs if points == "proportional" and not given_here else math.inf
        return min(epoch_point(epochs, horizon, total, steps_per_epoch), total)

    for option, epochs in recipe.epoch_options.items():
        if option not in given.get("method_options", {}):
            method_options[option] = schedule_point(epochs, False)
    for option, epochs in recipe.period_options.items():
        if option not in given.get("method_options", {}):
            method_options[option] = max(1, round(epochs * steps_per_epoch))
    for option in recipe.dataset_size_options:
        if option not in given.get("method_options", {}):
            method_options[option] = min(n_items, MAX_DATASET_OPTION)

    inputs = {"image_size": image_size, "views": views.to_dict()}
    if text:
        if "vocab_size" in given.get("backbone_options", {}):
            raise ValueError("a text encoder's vocab_size is the tokenizer's (word vectors: the corpus's words "
                             "seen min_count times): set tokenizer.vocab_size or method_options.min_count")
        tokenizer = {**recipe.tokenizer, **given.get("tokenizer", {})}
        if not words:
            backbone_options["vocab_size"] = tokenizer["vocab_size"]
        inputs = {"modality": TEXT, "tokenizer": tokenizer}
    elif info.modality != IMAGE:  # audio: the modality is recorded, as for text (image recipes predate it)
        inputs["modality"] = info.modality
    epochs = given.get("epochs", recipe.epochs) if words else round(total / steps_per_epoch, 4)
    return {
        "method": method, "scale": scale, "n_items": n_items, **inputs, "adjustments": notes,
        "backbone": recipe.backbone, "backbone_options": backbone_options, "method_options": method_options,
        "base_lr": recipe.base_lr, "lr_scaling": recipe.lr_scaling, "recipe_epochs": recipe.epochs,
        "epochs": epochs, "steps_per_epoch": steps_per_epoch,
        "train": {
            "steps": total, "batch_size": batch, "optimizer": recipe.optimizer, "lr": lr,
            "final_lr": final_lr, "weight_decay": recipe.weight_decay,
            "final_weight_decay": recipe.final_weight_decay,
            "warmup_steps": given["warmup_steps"] if "warmup_steps" in given else
            schedule_point(recipe.warmup_epochs, "warmup_epochs" in given),
            "momentum": recipe.momentum, "betas": list(recipe.betas), "eta": recipe.eta, "clip_lr": recipe.clip_lr,
            "exclude_bias_n_norm": recipe.exclude_bias_n_norm, "grad_clip": recipe.grad_clip,
            "grad_clip_mode": recipe.grad_clip_mode,
            "freeze_last_layer_steps": schedule_point(recipe.freeze_last_layer_epochs,
                                                      "freeze_last_layer_epochs" in given),
            "lr_groups": {k: dict(v) for k, v in recipe.lr_groups.items()},
        },
        "schedule_points": points, "overridden": sorted(given), "sources": dict(recipe.sources), "notes": recipe.notes,
    }


def scaled_lr(base_lr: float, batch_size: int, lr_scaling: str) -> float:
    return base_lr * batch_size / 256 if lr_scaling == "linear" else base_lr


def words_budget(recipe: dict, steps_per_epoch: int) -> dict:
    """A word-vector recipe's budget once its corpus is counted: `steps_per_epoch` steps (GloVe:
    batches of co-occurrence entries; gensim methods: documents) for each of its epochs."""
    recipe["steps_per_epoch"] = steps_per_epoch
    recipe["train"]["steps"] = int(recipe["epochs"]) * steps_per_epoch
    return recipe


def epoch_point(epochs: float, recipe_epochs: float, total_steps: int, steps_per_epoch: int) -> int:
    """A schedule point given in epochs, in steps: the smaller of the absolute point and its
    fraction `epochs / recipe_epochs` of the run (recipe_epochs inf: absolute only)."""
    if epochs <= 0:
        return 0
    absolute = epochs * steps_per_epoch
    proportional = epochs / recipe_epochs * total_steps if math.isfinite(recipe_epochs) else absolute
    return max(1, math.ceil(round(min(absolute, proportional), 6)))  # 1/300 * 2100 is 7.000000000000001
