"""The one list of methods: name -> class, family, default backbone and paper defaults."""
from __future__ import annotations

import inspect
from dataclasses import dataclass

from core.augment import ViewConfig, ViewMaker
from core.backbones import build_backbone
from core.methods.recipe import Recipe, scale_for
from core.modalities import AUDIO, IMAGE, TEXT, WORDS


@dataclass
class MethodInfo:
    name: str
    family: str
    cls: type
    recipes: dict[str, Recipe]
    modality: str = IMAGE
    paper: str = ""

    @property
    def trainer(self) -> str:
        """How a job of this method trains (the key of workers/modalities.py's PRETRAIN): its
        modality, or `words` for word vectors (their recipes count words instead of tokenising)."""
        words = any(recipe.tokenizer.get("kind") == WORDS for recipe in self.recipes.values())
        return WORDS if words else self.modality

    @property
    def default_backbone(self) -> str:
        """The backbone a job gets when its spec names none: for text, the first (smallest) size's;
        for images, the `large` recipe's (images of at most 64 px get `small`'s: default_backbones)."""
        return self.recipes[next(iter(self.recipes)) if self.modality == TEXT else "large"].backbone

    @property
    def default_backbones(self) -> dict[str, str]:
        """Each recipe's backbone: what a job of that scale (image size, or text size) trains."""
        return {scale: recipe.backbone for scale, recipe in self.recipes.items()}

    def options(self) -> dict:
        """Method hyper-parameters with their defaults (from the class signature)."""
        params = list(inspect.signature(self.cls.__init__).parameters.values())[3:]
        return {p.name: p.default for p in params if p.default is not inspect.Parameter.empty}

    def describe(self) -> dict:
        """JSON-able: the method with its recipes, each value with its source."""
        return {"name": self.name, "family": self.family, "modality": self.modality, "paper": self.paper,
                "default_backbone": self.default_backbone, "default_backbones": self.default_backbones,
                "options": self.options(),
                "recipes": {scale: recipe.describe() for scale, recipe in sorted(self.recipes.items())}}


METHODS: dict[str, MethodInfo] = {}


def register(name: str, family: str, recipes: dict[str, Recipe], modality: str = IMAGE, paper: str = ""):
    def wrap(cls):
        cls.name = name
        METHODS[name] = MethodInfo(name, family, cls, dict(recipes), modality, paper)
        return cls

    return wrap


def _load_all() -> None:
    """Import every method module of this folder once: each registers itself (a plug-in: the
    registry names none of them, so none of them is imported twice or in a circle)."""
    import importlib
    import pkgutil
    from pathlib import Path

    for module in pkgutil.iter_modules([str(Path(__file__).parent)]):
        if module.name not in ("base", "registry", "recipe"):
            importlib.import_module(f"core.methods.{module.name}")


def method_names() -> list[str]:
    _load_all()
    return sorted(METHODS)


def method_info(name: str) -> MethodInfo:
    _load_all()
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; choose one of {', '.join(sorted(METHODS))}")
    return METHODS[name]


def build(name: str, backbone: str | None = None, in_channels: int = 3, image_size: int = 32,
          mean: list[float] | None = None, std: list[float] | None = None, augment: dict | None = None,
          backbone_options: dict | None = None, scale: str | None = None, **options):
    """Build a method with a fresh backbone, from its recipe for the image scale (`scale`, or
    chosen from `image_size`): the recipe's backbone, views and method options, with the
    arguments on top. `augment` overrides views; `options` hyper-parameters (unknown names raise
    ValueError)."""
    info = method_info(name)
    unknown = set(options) - set(info.options())
    if unknown:
        raise ValueError(f"unknown option(s) for {name}: {', '.join(sorted(unknown))}; "
                         f"known: {', '.join(sorted(info.options())) or 'none'}")
    scale = scale or scale_for(image_size)
    if scale not in info.recipes:
        raise ValueError(f"{name} has no {scale!r} recipe; it has {', '.join(sorted(info.recipes))}")
    recipe = info.recipes[scale]
    if backbone is None or backbone == recipe.backbone:
        backbone, backbone_options = recipe.backbone, {**recipe.backbone_options, **(backbone_options or {})}
    net = build_backbone(backbone, in_channels, image_size, **(backbone_options or {}))
    mean = mean or [0.5] * in_channels
    std = std or [0.25] * in_channels
    views = ViewMaker(ViewConfig.from_dict(augment, base=recipe.views), mean, std)
    hparams = {**info.options(), **recipe.method_options, **options}
    method = info.cls(net, views, **hparams)
    method.hparams = hparams  # what it was built with: recorded in every full checkpoint
    return method


def build_resolved(recipe: dict, in_channels: int = 3, mean: list[float] | None = None,
                   std: list[float] | None = None):
    """The method exactly as a resolved recipe (core.recipes.resolve) says: backbone, its
    options, views and every method option explicit."""
    if recipe.get("modality") in (TEXT, AUDIO):
        return build_viewless(recipe)
    return build(recipe["method"], recipe["backbone"], in_channels=in_channels, image_size=recipe["image_size"],
                 mean=mean, std=std, augment=recipe["views"], backbone_options=recipe["backbone_options"],
                 scale=recipe["scale"], **recipe["method_options"])


def build_viewless(recipe: dict):
    """A text or audio method from its resolved recipe: the recipe's backbone with its options
    (a text encoder sized by the recipe's tokenizer: its vocab_size is in backbone_options) and
    every method option explicit; no views. A text method's caller sets the trained tokenizer."""
    info = method_info(recipe["method"])
    unknown = set(recipe["method_options"]) - set(info.options())
    if unknown:
        raise ValueError(f"unknown option(s) for {info.name}: {', '.join(sorted(unknown))}")
    net = build_backbone(recipe["backbone"], in_channels=1, image_size=0, **recipe["backbone_options"])
    method = info.cls(net, None, **recipe["method_options"])
    method.hparams = dict(recipe["method_options"])
    return method
