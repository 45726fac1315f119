"""View generation: a list of crop specs, each producing some views of every image in a batch."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

import torch
from torch import Tensor

from core.augment import ops, stored_crops


@dataclass
class CropSpec:
    """One kind of crop. `size` is a fraction of the input side when <= 1, else pixels."""

    count: int = 2
    size: float = 1.0
    scale: tuple[float, float] = (0.2, 1.0)
    blur_p: float = 0.0
    solarize_p: float = 0.0


@dataclass
class ViewConfig:
    """SimCLR-style defaults; methods override them with their papers' values."""

    crops: list[CropSpec] = field(default_factory=lambda: [CropSpec()])
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip_p: float = 0.5
    jitter_p: float = 0.8
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.2
    hue: float = 0.1
    grayscale_p: float = 0.2
    blur_sigma: tuple[float, float] = (0.1, 2.0)

    @classmethod
    def from_dict(cls, values: dict | None, base: "ViewConfig | None" = None) -> "ViewConfig":
        """Override `base` (or the defaults) with user values; unknown keys raise ValueError."""
        config = base or cls()
        values = dict(values or {})
        known = {f.name for f in fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"unknown augmentation option(s): {', '.join(sorted(unknown))}")
        if "crops" in values:
            values["crops"] = [c if isinstance(c, CropSpec) else CropSpec(**c) for c in values["crops"]]
        for key in ("ratio", "blur_sigma"):
            if key in values:
                values[key] = tuple(values[key])
        current = {f.name: getattr(config, f.name) for f in fields(cls)}
        return cls(**{**current, **values})

    def to_dict(self) -> dict:
        """JSON-able (tuples as lists); `from_dict` reads it back."""
        out = asdict(self)
        out["crops"] = [{**c, "scale": list(c["scale"])} for c in out["crops"]]
        out["ratio"], out["blur_sigma"] = list(self.ratio), list(self.blur_sigma)
        return out


def normalize(x: Tensor, mean: list[float], std: list[float]) -> Tensor:
    return (x - x.new_tensor(mean).view(1, -1, 1, 1)) / x.new_tensor(std).view(1, -1, 1, 1)


class ViewMaker:
    """Turns a batch of uint8 images into augmented, normalised views, on the batch's device.

    Set `trace` to a list to observe what was sampled: each view then appends a dict with `spec`
    (index into config.crops), `size` (output side) and per-image tensors `area` (the crop's area
    fraction as used), `aspect` (its w / h), and the bool masks `flip`, `jitter`, `grayscale`,
    `blur`, `solarize`; plus the jitter factors that were drawn (`brightness`, `contrast`,
    `saturation`, `hue`) and `sigma` when blur was drawn. Tracing changes no random draw."""

    def __init__(self, config: ViewConfig, mean: list[float], std: list[float]):
        self.config, self.mean, self.std = config, mean, std
        self.trace: list[dict] | None = None

    def __call__(self, images: Tensor, gen: torch.Generator) -> list[Tensor]:
        x = images.float() / 255 if images.dtype == torch.uint8 else images
        side = stored_crops.input_side(x)  # the training side, on images stored keeping their aspect
        views = []
        for index, crop in enumerate(self.config.crops):
            size = int(round(crop.size * side)) if crop.size <= 1 else int(crop.size)
            for _ in range(crop.count):
                record = None if self.trace is None else {}
                views.append(normalize(self.one_view(x, crop, size, gen, record), self.mean, self.std))
                if record is not None:
                    off = torch.zeros(len(x), dtype=torch.bool, device=x.device)  # ops skipped at p = 0
                    self.trace.append({"spec": index, "size": size, "grayscale": off, "blur": off, "solarize": off,
                                       **record})
        return views

    def one_view(self, x: Tensor, crop: CropSpec, size: int, gen: torch.Generator,
                 trace: dict | None = None) -> Tensor:
        c = self.config
        v = stored_crops.resized_crop_flip(x, size, crop.scale, c.ratio, c.flip_p, gen, trace)  # square: ops'
        v = ops.color_jitter(v, c.jitter_p, c.brightness, c.contrast, c.saturation, c.hue, gen, trace)
        v = ops.random_grayscale(v, c.grayscale_p, gen, trace)
        v = ops.gaussian_blur(v, crop.blur_p, c.blur_sigma, gen, trace)
        return ops.solarize(v, crop.solarize_p, gen, trace=trace)

    def plain(self, images: Tensor) -> Tensor:
        """The un-augmented, normalised input (for evaluation and embeddings)."""
        x = images.float() / 255 if images.dtype == torch.uint8 else images
        return normalize(x, self.mean, self.std)


# Presets shared by several papers.
# BYOL's asymmetric pair (Grill et al. 2020, table 6): blur 1.0 on one view; blur 0.1 and
# solarisation 0.2 on the other; crops of 8-100 %. MoCo v3, NNCLR, Barlow Twins and VICReg use it.
BYOL_VIEWS = ViewConfig(crops=[CropSpec(count=1, scale=(0.08, 1.0), blur_p=1.0),
                               CropSpec(count=1, scale=(0.08, 1.0), blur_p=0.1, solarize_p=0.2)])
# MoCo v2's (Chen et al. 2020b): two crops of 20-100 % with blur p=0.5, stronger saturation; SimSiam's too.
MOCO_V2_VIEWS = ViewConfig(crops=[CropSpec(count=2, scale=(0.2, 1.0), blur_p=0.5)], brightness=0.4, contrast=0.4,
                           saturation=0.4, hue=0.1)
# solo-learn's CIFAR asymmetric pair (scripts/pretrain/cifar/augmentations/asymmetric.yaml with the
# 32-px change): BYOL's jitter and solarisation 0.2 on the second view, crops of 8-100 %, no blur
# (a 3-tap kernel at 32 px). BYOL, NNCLR, MoCo v3, DINO and Barlow Twins use it at the small scale.
CIFAR_ASYMMETRIC_VIEWS = ViewConfig(crops=[CropSpec(count=1, scale=(0.08, 1.0)),
                                           CropSpec(count=1, scale=(0.08, 1.0), solarize_p=0.2)],
                                    jitter_p=0.8, brightness=0.4, contrast=0.4, saturation=0.2, hue=0.1,
                                    grayscale_p=0.2)
