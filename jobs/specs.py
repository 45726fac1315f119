"""Job specs: what a user POSTs to /v1/jobs, one discriminated union on `kind`."""
from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, field_validator, model_validator

from core.backbones import backbone_names
from core.evaluate.protocols import check_options
from core.index import faiss_available
from core.masters import check_bf16_params
from core.methods import method_info, method_names
from core.recipes import OPTIMIZER_OPTIONS, OVERRIDABLE, resolve
from jobs.text import TokenizerSpec

QUEUE_PATTERN = r"^[A-Za-z0-9_.-]{1,64}$"
BASELINES = ("raw-pixels", "random-init", "tfidf", "mfcc")  # raw-pixels: images; tfidf: text; mfcc: audio


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EvaluationSpec(Strict):
    protocol: str = Field("knn", description="knn | linear | few-shot | finetune | clustering | health")
    options: dict = Field(default_factory=dict, description="the protocol's options, e.g. {\"k\": [20, 200]}")

    @model_validator(mode="after")
    def known_protocol(self) -> "EvaluationSpec":
        check_options(self.protocol, self.options)  # ValueError names the protocols / options
        return self


def default_evaluations() -> list[EvaluationSpec]:
    return [EvaluationSpec(protocol="knn"), EvaluationSpec(protocol="linear")]


class PretrainSpec(Strict):
    kind: Literal["pretrain"] = "pretrain"
    method: str = Field(description="a registered method name (GET /v1/methods)")
    dataset: str = Field(description="a dataset id or a built-in name (digits, fashion-mnist, wordnet-glosses, "
                                     "spoken-words, spoken-voices)")
    scale: Literal["small", "large", "tiny", "base", "seer"] | None = Field(
        None, description="which recipe: small (<= 64 px) or large; default: from the dataset's image size; "
                          "seer: SwAV's SEER recipe (RegNetY-256GF on uncurated images). "
                          "Text methods: tiny, small or base (the model size; default tiny)")
    backbone: str | None = Field(None, description="default: the recipe's backbone")
    backbone_options: dict = Field(default_factory=dict)
    method_options: dict = Field(default_factory=dict)
    epochs: int | None = Field(None, gt=0, le=10_000, description="default: the recipe's epochs")
    steps: int | None = Field(None, gt=0, le=10_000_000)
    # Training settings: None takes the method's recipe; a value given here wins.
    batch_size: int | None = Field(None, gt=1, le=65_536)
    optimizer: Literal["adamw", "sgd", "lars", "adagrad"] | None = Field(
        None, description="another optimizer than the recipe's needs lr or base_lr as well")
    optimizer_options: dict = Field(default_factory=dict,
                                    description="momentum, betas, eta, clip_lr, exclude_bias_n_norm")
    base_lr: float | None = Field(None, gt=0, le=100, description="scaled by batch_size / 256 (linear rule)")
    lr: float | None = Field(None, gt=0, le=100, description="the peak LR itself, unscaled (wins over base_lr)")
    final_lr: float | None = Field(None, ge=0, le=100)
    weight_decay: float | None = Field(None, ge=0, le=10)
    final_weight_decay: float | None = Field(None, ge=0, le=10, description="cosine weight-decay schedule end")
    warmup_epochs: float | None = Field(None, ge=0, le=10_000)
    warmup_steps: int | None = Field(None, ge=0, description="wins over warmup_epochs")
    grad_clip: float | None = Field(None, gt=0, le=1e6)
    grad_clip_mode: Literal["global", "per_parameter"] | None = None
    freeze_last_layer_epochs: float | None = Field(None, ge=0, le=10_000)
    schedule_points: Literal["absolute", "proportional"] | None = Field(
        None, description="absolute (default): warm-up, freezes and other epoch points count epochs of the run; "
                          "proportional: the recipe's points keep their fraction of its epochs in a shorter run")
    lr_groups: dict | None = Field(None, description="per-group LR options: {\"biases_and_norms\" or a module "
                                                     "name: {\"lr_scale\": x, \"fixed_lr\": bool}}")
    augment: dict = Field(default_factory=dict, description="overrides of the method's view defaults")
    tokenizer: TokenizerSpec | None = Field(None, description="text methods: the tokenizer to train, or reuse")
    image_size: int | None = Field(None, ge=4, le=1024, description="resize images to this side")
    seed: int = Field(0, ge=0, le=2**31 - 1)
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto", description="auto: bf16 autocast where the device has native bf16 (recent GPUs, CPUs with "
        "AVX512-BF16 or AMX), else fp32")
    param_dtype: Literal["fp32", "bf16"] = Field(
        "fp32", description="bf16: the model's weight matrices in bf16 (no autocast casts of them), the optimiser "
        "updating fp32 master copies, checkpoints fp32; needs precision bf16 (or auto on a device with native "
        "bf16), one process, compile other than whole, and a method without an EMA target (mae, simclr, "
        "barlow_twins, vicreg, simsiam)")
    compile: Literal["auto", "true", "false", "whole"] = Field(
        "auto", description="torch.compile the backbone; auto: convnets on GPUs (where benchmarks measured a "
        "gain), else eager; whole: the step's views, forward, loss and backward as one graph (one process, "
        "not fp16)")
    cuda_graphs: bool = Field(False, description="capture the backbone's fixed-shape steps in CUDA graphs "
                                                "(torch.compile mode reduce-overhead); CUDA devices only")
    device: str = Field("auto", pattern=r"^(auto|cpu|cuda(:\d+)?)$")
    queue: str = Field("default", pattern=QUEUE_PATTERN)
    checkpoint_every: int = Field(0, ge=0, description="steps between checkpoints; 0: every checkpoint_seconds")
    checkpoint_seconds: float | None = Field(None, ge=0, le=86_400, description="seconds between checkpoints as well "
                                             "(default: the service's, 10 minutes), so a retry repeats little; 0: off")
    keep_last: int | None = Field(None, ge=1, le=1000,
                                  description="keep only the newest N checkpoints (plus the best and the final); "
                                              "default: keep all")
    log_every: int = Field(10, gt=0)
    max_attempts: int | None = Field(None, ge=1, le=20, description="default: DARKMATTER_MAX_ATTEMPTS (3)")
    devices: int = Field(1, ge=1, le=64, description="processes per machine, one per GPU (gloo processes on a CPU "
                                                       "worker): a standalone torchrun launch when more than one")
    nodes: int = Field(1, ge=1, le=64, description="machines: more than 1 runs the job on the Ray cluster "
                                                  "(DARKMATTER_RAY_ADDRESS), nodes x devices Ray Train workers")
    sync_batchnorm: bool | None = Field(None, description="batch-norm statistics over the global batch; default: on "
                                                          "when several processes train a method with batch norm")
    evaluations: list[EvaluationSpec] = Field(default_factory=default_evaluations,
                                              description="run on the final encoder when the dataset has labels")
    health_every: int = Field(0, ge=0, description="steps between representation-health metrics; 0: off")
    stop_on_collapse: bool = Field(False, description="end the job early when the health check sees collapse")

    @field_validator("method")
    @classmethod
    def known_method(cls, name: str) -> str:
        method_info(name)  # ValueError lists the known names
        return name

    @field_validator("backbone")
    @classmethod
    def known_backbone(cls, name: str | None) -> str | None:
        if name is not None and name not in backbone_names():
            raise ValueError(f"unknown backbone {name!r}; choose one of {', '.join(backbone_names())}")
        return name

    @model_validator(mode="after")
    def budget(self) -> "PretrainSpec":
        if self.epochs is not None and self.steps is not None:
            raise ValueError("give epochs or steps, not both")
        unknown = set(self.method_options) - set(method_info(self.method).options())
        if unknown:
            raise ValueError(f"unknown method_options for {self.method}: {', '.join(sorted(unknown))}")
        unknown = set(self.optimizer_options) - set(OPTIMIZER_OPTIONS)
        if unknown:
            raise ValueError(f"unknown optimizer_options: {', '.join(sorted(unknown))}; "
                             f"known: {', '.join(OPTIMIZER_OPTIONS)}")
        if self.cuda_graphs and self.device == "cpu":
            raise ValueError("cuda_graphs needs a CUDA device; this spec asks for device cpu")
        if self.param_dtype == "bf16":  # "auto" resolves on the worker's device, where the loop checks it again
            check_bf16_params(method_info(self.method).cls, "bf16" if self.precision == "auto" else self.precision,
                              self.nodes * self.devices, self.compile)
        return self

    def overrides(self) -> dict:
        """The recipe fields this spec sets explicitly (everything else comes from the recipe)."""
        names = ("scale", "epochs", "steps", "optimizer_options", "backbone_options", "method_options", "augment",
                 "schedule_points")
        given = {k: v for k in names + OVERRIDABLE if (v := getattr(self, k, None)) not in (None, {})}
        if self.tokenizer and self.tokenizer.overrides():
            given["tokenizer"] = self.tokenizer.overrides()
        return given

    def resolve(self, image_size: int, n_items: int, tokenizer: dict | None = None) -> dict:
        """The resolved recipe for a dataset of `n_items` images of side `image_size` (the
        spec's own image_size wins), or of n_items texts; `tokenizer`: the facts of a reused
        tokenizer. Raises ValueError when it cannot run."""
        overrides = {**self.overrides(), **({"tokenizer": tokenizer} if tokenizer else {})}
        recipe = resolve(self.method, self.image_size or image_size, n_items, overrides)
        recipe["train"].update(seed=self.seed, precision=self.precision, param_dtype=self.param_dtype,
                               compile=self.compile, cuda_graphs=self.cuda_graphs, log_every=self.log_every,
                               checkpoint_every=self.checkpoint_every, sync_batchnorm=self.sync_batchnorm)
        if self.checkpoint_seconds is not None:
            recipe["train"]["checkpoint_seconds"] = self.checkpoint_seconds
        world = self.nodes * self.devices
        batch = recipe["train"]["batch_size"]
        if batch % world:
            raise ValueError(f"batch_size {batch} does not split evenly over {world} processes "
                             f"({self.nodes} nodes x {self.devices} devices)")
        recipe["distributed"] = {"nodes": self.nodes, "devices": self.devices, "world_size": world,
                                 "global_batch": batch, "per_device_batch": batch // world,
                                 "lr_scaling": "the recipe's rule on the global batch (batch_size is the sum "
                                               "over all processes)"}
        return recipe


class EvaluateSpec(Strict):
    kind: Literal["evaluate"]
    checkpoint: str | None = Field(None, description="a checkpoint id, or a baseline: raw-pixels | random-init "
                                                     "(images), tfidf | random-init (text), mfcc | random-init "
                                                     "(audio)")
    checkpoints: list[str] = Field(default_factory=list, max_length=50,
                                   description="several checkpoint ids and/or baselines, evaluated in turn")
    dataset: str
    protocols: list[EvaluationSpec] = Field(default_factory=lambda: [EvaluationSpec()], min_length=1)
    backbone: str | None = Field(None, description="architecture for random-init (text: default text_tiny)")
    backbone_options: dict = Field(default_factory=dict, description="its options, e.g. {\"width\": 32}")
    seed: int = Field(0, ge=0, le=2**31 - 1)
    device: str = Field("auto", pattern=r"^(auto|cpu|cuda(:\d+)?)$")
    queue: str = Field("default", pattern=QUEUE_PATTERN)
    max_attempts: int | None = Field(None, ge=1, le=20, description="default: DARKMATTER_MAX_ATTEMPTS (3)")

    @model_validator(mode="after")
    def some_checkpoint(self) -> "EvaluateSpec":
        if not self.sources():
            raise ValueError("give checkpoint or checkpoints (ids, or the baselines raw-pixels / random-init)")
        return self

    def sources(self) -> list[str]:
        """checkpoint and checkpoints, in order, without repeats."""
        return list(dict.fromkeys(([self.checkpoint] if self.checkpoint else []) + self.checkpoints))


class EmbedIndexSpec(Strict):
    kind: Literal["embed-index"]
    checkpoint: str = Field(description="the checkpoint whose backbone embeds the items")
    dataset: str
    split: Literal["train", "test"] = "train"
    dtype: Literal["float16", "float32"] = "float32"
    search: Literal["exact", "hnsw"] = Field("exact", description="hnsw: also build an approximate faiss graph")
    device: str = Field("auto", pattern=r"^(auto|cpu|cuda(:\d+)?)$")
    queue: str = Field("default", pattern=QUEUE_PATTERN)
    max_attempts: int | None = Field(None, ge=1, le=20, description="default: DARKMATTER_MAX_ATTEMPTS (3)")

    @field_validator("search")
    @classmethod
    def faiss_installed(cls, search: str) -> str:
        if search == "hnsw" and not faiss_available():
            raise ValueError("search 'hnsw' needs faiss-cpu, which is not installed here; use 'exact'")
        return search


def _kind(value) -> str | None:
    return value.get("kind", "pretrain") if isinstance(value, dict) else getattr(value, "kind", None)


JobSpec = Annotated[Union[Annotated[PretrainSpec, Tag("pretrain")], Annotated[EvaluateSpec, Tag("evaluate")],
                          Annotated[EmbedIndexSpec, Tag("embed-index")]], Discriminator(_kind)]


def load_registries() -> None:
    """Import every method and backbone now (torchvision with them, seconds) rather than while the
    first spec is validated: the API validates bodies on its event loop, so that would stall every
    request in flight."""
    method_names()
    backbone_names()


def available_methods() -> list[dict]:
    return [{"name": n, "family": method_info(n).family, "default_backbone": method_info(n).default_backbone,
             "default_backbones": method_info(n).default_backbones,
             "modality": method_info(n).modality, "paper": method_info(n).paper, "options": method_info(n).options(),
             "scales": sorted(method_info(n).recipes)}
            for n in method_names()]


def method_detail(name: str) -> dict:
    """A method with its recipes; ValueError names the known methods."""
    return method_info(name).describe()
