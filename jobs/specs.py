"""Job specs: what a user POSTs to /v1/jobs, one discriminated union on `kind`."""
from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, field_validator, model_validator

from core.backbones import backbone_names
from core.evaluate.protocols import check_options
from core.index import faiss_available
from core.methods import method_info, method_names

QUEUE_PATTERN = r"^[A-Za-z0-9_.-]{1,64}$"
BASELINES = ("raw-pixels", "random-init")


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
    dataset: str = Field(description="a dataset id or a built-in name (digits, fashion-mnist)")
    backbone: str | None = Field(None, description="default: the method's default backbone")
    backbone_options: dict = Field(default_factory=dict)
    method_options: dict = Field(default_factory=dict)
    epochs: int | None = Field(None, gt=0, le=10_000)
    steps: int | None = Field(None, gt=0, le=10_000_000)
    batch_size: int = Field(256, gt=1, le=65_536)
    optimizer: Literal["adamw", "sgd", "lars"] = "adamw"
    lr: float = Field(1e-3, gt=0, le=100)
    weight_decay: float = Field(1e-4, ge=0, le=10)
    warmup_steps: int = Field(0, ge=0)
    augment: dict = Field(default_factory=dict, description="overrides of the method's view defaults")
    image_size: int | None = Field(None, ge=4, le=1024, description="resize images to this side")
    seed: int = Field(0, ge=0, le=2**31 - 1)
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    device: str = Field("auto", pattern=r"^(auto|cpu|cuda(:\d+)?)$")
    queue: str = Field("default", pattern=QUEUE_PATTERN)
    checkpoint_every: int = Field(0, ge=0, description="steps between checkpoints; 0: final only")
    keep_last: int | None = Field(None, ge=1, le=1000,
                                  description="keep only the newest N checkpoints (plus the best and the final); "
                                              "default: keep all")
    log_every: int = Field(10, gt=0)
    max_attempts: int = Field(3, ge=1, le=20)
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
        if self.epochs is None and self.steps is None:
            self.epochs = 10
        if self.epochs is not None and self.steps is not None:
            raise ValueError("give epochs or steps, not both")
        unknown = set(self.method_options) - set(method_info(self.method).options())
        if unknown:
            raise ValueError(f"unknown method_options for {self.method}: {', '.join(sorted(unknown))}")
        return self

    def total_steps(self, n_items: int) -> int:
        if self.steps is not None:
            return self.steps
        return self.epochs * max(1, n_items // self.batch_size)


class EvaluateSpec(Strict):
    kind: Literal["evaluate"]
    checkpoint: str | None = Field(None, description="a checkpoint id, or a baseline: raw-pixels | random-init")
    checkpoints: list[str] = Field(default_factory=list, max_length=50,
                                   description="several checkpoint ids and/or baselines, evaluated in turn")
    dataset: str
    protocols: list[EvaluationSpec] = Field(default_factory=lambda: [EvaluationSpec()], min_length=1)
    backbone: str | None = Field(None, description="architecture for random-init")
    seed: int = Field(0, ge=0, le=2**31 - 1)
    device: str = Field("auto", pattern=r"^(auto|cpu|cuda(:\d+)?)$")
    queue: str = Field("default", pattern=QUEUE_PATTERN)
    max_attempts: int = Field(3, ge=1, le=20)

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
    max_attempts: int = Field(3, ge=1, le=20)

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


def available_methods() -> list[dict]:
    return [{"name": n, "family": method_info(n).family, "default_backbone": method_info(n).default_backbone,
             "modality": method_info(n).modality, "paper": method_info(n).paper, "options": method_info(n).options()}
            for n in method_names()]
