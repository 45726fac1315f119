"""The one list of methods: name -> class, family, default backbone and paper defaults."""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field

from core.augment import ViewConfig, ViewMaker
from core.backbones import build_backbone


@dataclass
class MethodInfo:
    name: str
    family: str
    cls: type
    default_backbone: str
    views: ViewConfig
    modality: str = "image"
    paper: str = ""
    train_defaults: dict = field(default_factory=dict)

    def options(self) -> dict:
        """Method hyper-parameters with their defaults (from the class signature)."""
        params = list(inspect.signature(self.cls.__init__).parameters.values())[3:]
        return {p.name: p.default for p in params if p.default is not inspect.Parameter.empty}


METHODS: dict[str, MethodInfo] = {}


def register(name: str, family: str, default_backbone: str = "resnet18", views: ViewConfig | None = None,
             modality: str = "image", paper: str = "", **train_defaults):
    def wrap(cls):
        cls.name = name
        METHODS[name] = MethodInfo(name, family, cls, default_backbone, views or ViewConfig(), modality, paper,
                                   train_defaults)
        return cls

    return wrap


def _load_all() -> None:
    import importlib
    import pkgutil

    import core.methods as package

    for module in pkgutil.iter_modules(package.__path__):
        if module.name not in ("base", "registry"):
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
          backbone_options: dict | None = None, **options):
    """Build a method with a fresh backbone. `augment` overrides the method's view defaults;
    `options` its hyper-parameters (unknown names raise ValueError)."""
    info = method_info(name)
    unknown = set(options) - set(info.options())
    if unknown:
        raise ValueError(f"unknown option(s) for {name}: {', '.join(sorted(unknown))}; "
                         f"known: {', '.join(sorted(info.options())) or 'none'}")
    net = build_backbone(backbone or info.default_backbone, in_channels, image_size, **(backbone_options or {}))
    mean = mean or [0.5] * in_channels
    std = std or [0.25] * in_channels
    views = ViewMaker(ViewConfig.from_dict(augment, base=info.views), mean, std)
    return info.cls(net, views, **options)
