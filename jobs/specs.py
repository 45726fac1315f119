"""Job specs: what a user POSTs to /v1/jobs, one discriminated union on `kind`."""
from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, field_validator, model_validator

from core.backbones import backbone_names
from core.methods import method_info, method_names

QUEUE_PATTERN = r"^[A-Za-z0-9_.-]{1,64}$"
BASELINES = ("raw-pixels", "random-init")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EvaluationSpec(Strict):
    protocol: Literal["knn"] = "knn"
    options: dict = Field(default_factory=dict)


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
    evaluations: list[EvaluationSpec] = Field(default_factory=lambda: [EvaluationSpec()])

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
    checkpoint: str = Field(description="a checkpoint id, or a baseline: raw-pixels | random-init")
    dataset: str
    protocols: list[EvaluationSpec] = Field(default_factory=lambda: [EvaluationSpec()], min_length=1)
    backbone: str | None = Field(None, description="architecture for random-init")
    seed: int = Field(0, ge=0, le=2**31 - 1)
    device: str = Field("auto", pattern=r"^(auto|cpu|cuda(:\d+)?)$")
    queue: str = Field("default", pattern=QUEUE_PATTERN)
    max_attempts: int = Field(3, ge=1, le=20)


def _kind(value) -> str | None:
    return value.get("kind", "pretrain") if isinstance(value, dict) else getattr(value, "kind", None)


JobSpec = Annotated[Union[Annotated[PretrainSpec, Tag("pretrain")], Annotated[EvaluateSpec, Tag("evaluate")]],
                    Discriminator(_kind)]


def available_methods() -> list[dict]:
    return [{"name": n, "family": method_info(n).family, "default_backbone": method_info(n).default_backbone,
             "modality": method_info(n).modality, "paper": method_info(n).paper, "options": method_info(n).options()}
            for n in method_names()]
