"""Recipes: each method's published training settings per image scale, and the one resolver that
turns (method, dataset, spec overrides) into every value a run uses.

A method file declares `RECIPES = {"small": Recipe(...), "large": Recipe(...)}`: `small` for
images of at most 64 px (CIFAR, Fashion-MNIST; solo-learn's `scripts/pretrain/cifar/*.yaml`),
`large` for 224 px ImageNet-like data. Each value cites its source in `sources`."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields, replace

from core.augment import ViewConfig

SCALES = ("small", "large")
SMALL_MAX_SIDE = 64
OPTIMIZERS = ("lars", "sgd", "adamw", "adagrad")
CLIP_MODES = ("global", "per_parameter")


@dataclass(frozen=True)
class Recipe:
    """Epoch-denominated schedule points (warm-up, frozen last layer) are converted to steps by
    `resolve`. The LR follows the linear scaling rule, lr = base_lr * batch_size / 256, unless
    `lr_scaling` is "none" (then base_lr is the LR itself)."""

    backbone: str
    optimizer: str = "lars"
    base_lr: float = 0.3
    lr_scaling: str = "linear"  # linear | none
    batch_size: int = 256
    epochs: int = 1000
    warmup_epochs: float = 10.0
    final_lr: float = 0.0  # where the cosine ends (absolute, e.g. DINO's min_lr 1e-6)
    weight_decay: float = 1e-5
    final_weight_decay: float | None = None  # a cosine weight-decay schedule to this value (DINO 0.4)
    momentum: float = 0.9  # SGD and LARS
    betas: tuple[float, float] = (0.9, 0.999)  # AdamW
    eta: float = 0.02  # LARS trust coefficient
    clip_lr: bool = True  # LARS: the effective LR never exceeds the scheduled one
    exclude_bias_n_norm: bool = True  # LARS: biases and norms take plain SGD
    grad_clip: float | None = None
    grad_clip_mode: str = "global"  # global: one norm over all grads; per_parameter: each tensor (DINO)
    freeze_last_layer_epochs: float = 0.0  # DINO: the head's last layer gets no update this long
    backbone_options: dict = field(default_factory=dict)
    method_options: dict = field(default_factory=dict)
    views: ViewConfig = field(default_factory=ViewConfig)
    tokenizer: dict = field(default_factory=dict)  # text methods: kind, vocab_size, lowercase
    sources: dict = field(default_factory=dict)  # field name -> where the value comes from
    notes: str = ""  # where and why the recipe deviates from the paper

    def __post_init__(self):
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"recipe optimizer {self.optimizer!r}: choose one of {', '.join(OPTIMIZERS)}")
        if self.grad_clip_mode not in CLIP_MODES:
            raise ValueError(f"grad_clip_mode {self.grad_clip_mode!r}: choose one of {', '.join(CLIP_MODES)}")

    def describe(self) -> dict:
        """JSON-able, for GET /v1/methods/{name} and `darkmatter methods NAME`."""
        out = asdict(self)
        out["betas"] = list(self.betas)
        out["views"] = self.views.to_dict()
        if self.tokenizer:  # a text recipe: a tokenizer, no views
            del out["views"]
        return out


def scale_for(image_size: int) -> str:
    return "small" if image_size <= SMALL_MAX_SIDE else "large"


# The fields a spec may override, beyond the budget (epochs / steps) and the views.
OVERRIDABLE = ("backbone", "optimizer", "base_lr", "lr", "batch_size", "warmup_epochs", "warmup_steps", "final_lr",
               "weight_decay", "final_weight_decay", "grad_clip", "grad_clip_mode", "freeze_last_layer_epochs")
OPTIMIZER_OPTIONS = ("momentum", "betas", "eta", "clip_lr", "exclude_bias_n_norm")


def resolve(method: str, image_size: int, n_items: int, overrides: dict | None = None) -> dict:
    """Every value a run uses: the method's recipe for the image scale, with the spec's explicit
    fields on top. `overrides` holds only what the user set (None values are ignored):
    scale, epochs | steps, any OVERRIDABLE name, optimizer_options, backbone_options,
    method_options, augment; for a text method, tokenizer (its vocab_size sizes the embedding).
    Returns a JSON-able dict; `train` holds TrainConfig's fields."""
    from core.methods.registry import method_info

    info = method_info(method)
    given = {k: v for k, v in (overrides or {}).items() if v is not None}
    text = info.modality == "text"
    scale = given.get("scale") or (next(iter(info.recipes)) if text else scale_for(image_size))
    if scale not in info.recipes:
        raise ValueError(f"{method} has no {scale!r} recipe; it has {', '.join(sorted(info.recipes))}")
    recipe = info.recipes[scale]
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

    batch = recipe.batch_size
    words = text and recipe.tokenizer.get("kind") == "words"
    if batch > n_items and not words:
        raise ValueError(f"batch_size {batch} is larger than the dataset ({n_items} items)")
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
    lr = given["lr"] if "lr" in given else (
        recipe.base_lr * batch / 256 if recipe.lr_scaling == "linear" else recipe.base_lr)

    def schedule_point(name: str) -> int:
        # a value the spec gives counts epochs of this run; only the recipe's own scales with the run's length
        horizon = total / steps_per_epoch if name in given else recipe.epochs
        return epoch_point(getattr(recipe, name), horizon, total, steps_per_epoch)

    inputs = {"image_size": image_size, "views": views.to_dict()}
    if text:
        if "vocab_size" in given.get("backbone_options", {}):
            raise ValueError("a text encoder's vocab_size is the tokenizer's (word vectors: the corpus's words "
                             "seen min_count times): set tokenizer.vocab_size or method_options.min_count")
        tokenizer = {**recipe.tokenizer, **given.get("tokenizer", {})}
        if not words:
            backbone_options["vocab_size"] = tokenizer["vocab_size"]
        inputs = {"modality": "text", "tokenizer": tokenizer}
    epochs = given.get("epochs", recipe.epochs) if words else round(total / steps_per_epoch, 4)
    return {
        "method": method, "scale": scale, "n_items": n_items, **inputs,
        "backbone": recipe.backbone, "backbone_options": backbone_options, "method_options": method_options,
        "base_lr": recipe.base_lr, "lr_scaling": recipe.lr_scaling, "recipe_epochs": recipe.epochs,
        "epochs": epochs, "steps_per_epoch": steps_per_epoch,
        "train": {
            "steps": total, "batch_size": batch, "optimizer": recipe.optimizer, "lr": lr,
            "final_lr": recipe.final_lr, "weight_decay": recipe.weight_decay,
            "final_weight_decay": recipe.final_weight_decay,
            "warmup_steps": given["warmup_steps"] if "warmup_steps" in given else schedule_point("warmup_epochs"),
            "momentum": recipe.momentum, "betas": list(recipe.betas), "eta": recipe.eta, "clip_lr": recipe.clip_lr,
            "exclude_bias_n_norm": recipe.exclude_bias_n_norm, "grad_clip": recipe.grad_clip,
            "grad_clip_mode": recipe.grad_clip_mode,
            "freeze_last_layer_steps": schedule_point("freeze_last_layer_epochs"),
        },
        "overridden": sorted(given), "sources": dict(recipe.sources), "notes": recipe.notes,
    }


def words_budget(recipe: dict, steps_per_epoch: int) -> dict:
    """A word-vector recipe's budget once its corpus is counted: `steps_per_epoch` steps (GloVe:
    batches of co-occurrence entries; gensim methods: documents) for each of its epochs."""
    recipe["steps_per_epoch"] = steps_per_epoch
    recipe["train"]["steps"] = int(recipe["epochs"]) * steps_per_epoch
    return recipe


def epoch_point(epochs: float, recipe_epochs: float, total_steps: int, steps_per_epoch: int) -> int:
    """A schedule point given in epochs, in steps. A run shorter than the recipe keeps the
    point's fraction of the schedule (10 warm-up epochs of 1000 stay 1 % of a 50-epoch run)."""
    if epochs <= 0:
        return 0
    absolute = epochs * steps_per_epoch
    proportional = epochs / recipe_epochs * total_steps
    return max(1, math.ceil(round(min(absolute, proportional), 6)))  # 1/300 * 2100 is 7.000000000000001


def recipe_fields() -> list[str]:
    return [f.name for f in fields(Recipe)]
