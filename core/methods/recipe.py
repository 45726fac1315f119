"""A method's recipe: the training settings its file declares per image scale (or, for text, per
model size). core/recipes.py resolves them into every value a run uses.

A method file declares `RECIPES = {"small": Recipe(...), "large": Recipe(...)}`: `small` for
images of at most 64 px (CIFAR, Fashion-MNIST; solo-learn's `scripts/pretrain/cifar/*.yaml`),
`large` for 224 px ImageNet-like data. Each value cites its source in `sources`."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

from core.augment import ViewConfig
from core.optim import check_lr_groups

SCALES = ("small", "large")
SMALL_MAX_SIDE = 64
OPTIMIZERS = ("lars", "sgd", "adamw", "adagrad")
CLIP_MODES = ("global", "per_parameter")


@dataclass(frozen=True)
class Recipe:
    """Epoch-denominated schedule points (warm-up, frozen last layer, and the method options
    named in `epoch_options`) are converted to steps by `resolve`: absolute epochs of the run, as
    solo-learn and DINO keep them. The LR follows the linear scaling rule, lr = base_lr *
    batch_size / 256, unless `lr_scaling` is "none" (then base_lr is the LR itself); final_lr
    is given at the recipe's own batch size and scales with the LR."""

    backbone: str
    optimizer: str = "lars"
    base_lr: float = 0.3
    lr_scaling: str = "linear"  # linear | none
    batch_size: int = 256
    epochs: int = 1000
    warmup_epochs: float = 10.0
    final_lr: float = 0.0  # where the cosine ends, at the recipe's batch size (scales with the LR)
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
    # per-group LR options: selector ("biases_and_norms" or a module name) -> {lr_scale, fixed_lr}
    lr_groups: dict = field(default_factory=dict)
    # method options that are schedule points: option name (counted in steps) -> epochs
    epoch_options: dict = field(default_factory=dict)
    # method options that are periods of the data: option name (counted in steps) -> epochs, always whole
    # passes over the data (proportional schedule points do not shorten them: DeepCluster-v2's k-means
    # once per epoch would otherwise run every step of a short run)
    period_options: dict = field(default_factory=dict)
    # method options set to the number of training items, at most MAX_DATASET_OPTION (a memory bank)
    dataset_size_options: tuple[str, ...] = ()
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
        check_lr_groups(self.lr_groups)

    def describe(self) -> dict:
        """JSON-able, for GET /v1/methods/{name} and `darkmatter methods NAME`."""
        out = asdict(self)
        out["betas"] = list(self.betas)
        out["dataset_size_options"] = list(self.dataset_size_options)
        out["views"] = self.views.to_dict()
        if self.tokenizer:  # a text recipe: a tokenizer, no views
            del out["views"]
        return out


def scale_for(image_size: int) -> str:
    return "small" if image_size <= SMALL_MAX_SIDE else "large"


def recipe_fields() -> list[str]:
    return [f.name for f in fields(Recipe)]
