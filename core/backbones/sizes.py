"""Check a backbone's options against its builder and estimate its size without building it, so
that a service can refuse `{"depth": 100000000}` before any module exists."""
from __future__ import annotations

import inspect
import math

from core.backbones import BACKBONES, backbone_names

# Upper bounds of the integer options the backbones take (anything larger is no CPU/GPU-sized run).
INT_BOUNDS = {"width": 1024, "dim": 4096, "depth": 64, "heads": 64, "patch_size": 256}
DEFAULT_INT_BOUND = 4096
# Upper bounds of the float options (anything else: (0, 64]); a RegNet's width slope w_a is 230.83 at SEER's 256GF.
FLOAT_BOUNDS = {"w_a": 1024.0}
PROBABILITIES = ("dropout", "drop_path_rate", "attention_dropout", "activation_dropout", "layerdrop",
                 "dropout_input")  # rates: 0 (off) up to, not including, 1
RESNET_PARAMETERS = {"resnet18": 11_200_000, "resnet50": 23_600_000}


def check_options(name: str, options: dict) -> None:
    """ValueError naming the problem: an unknown backbone or option, a value of the wrong type, an
    integer out of its bounds. Types follow the builder's defaults (int, bool, str, bool|None)."""
    backbone_names()  # registers them all
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; choose one of {', '.join(sorted(BACKBONES))}")
    params = {p.name: p for p in inspect.signature(BACKBONES[name]).parameters.values()
              if p.name not in ("in_channels", "image_size")}
    unknown = sorted(set(options) - set(params))
    if unknown:
        raise ValueError(f"unknown backbone_options for {name}: {', '.join(map(str, unknown))}; "
                         f"known: {', '.join(params) or 'none'}")
    for key, value in options.items():
        default = params[key].default
        if isinstance(default, bool) or default is None:
            if not (isinstance(value, bool) or (value is None and default is None)):
                raise ValueError(f"backbone_options.{key} must be true or false")
        elif isinstance(default, int):
            bound = INT_BOUNDS.get(key, DEFAULT_INT_BOUND)
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= bound:
                raise ValueError(f"backbone_options.{key} must be an integer from 1 to {bound}")
        elif key in PROBABILITIES:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
                raise ValueError(f"backbone_options.{key} must be a rate in [0, 1)")
        elif isinstance(default, float):
            bound = FLOAT_BOUNDS.get(key, 64)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= bound:
                raise ValueError(f"backbone_options.{key} must be a number in (0, {bound:g}]")
        elif isinstance(default, str):
            if not isinstance(value, str) or len(value) > 64:
                raise ValueError(f"backbone_options.{key} must be a short string")
        else:
            raise ValueError(f"backbone_options.{key} cannot be set")


def estimate_parameters(name: str, in_channels: int, image_size: int, options: dict) -> int | None:
    """Parameters plus buffers of the backbone, from its options alone (None: no formula for it)."""
    if name == "small_cnn":
        w = options.get("width", 32)
        convs = 9 * (in_channels * w + w * 2 * w + 2 * w * 4 * w + 4 * w * 8 * w)
        return convs + 4 * (w + 2 * w + 4 * w + 8 * w)  # batch-norm weights, biases and running stats
    if name.startswith("vit_"):
        defaults = {p.name: p.default for p in inspect.signature(BACKBONES[name]).parameters.values()}
        d, depth = options.get("dim", defaults["dim"]), options.get("depth", defaults["depth"])
        patch = options.get("patch_size", defaults["patch_size"])
        grid = math.ceil(image_size / patch)
        block = 12 * d * d + 13 * d
        return patch * patch * in_channels * d + d + d + depth * block + 2 * d + grid * grid * d  # + position buffer
    if name.startswith("text_"):
        return _text_parameters(name, options)
    if name.startswith("regnet_y"):
        return regnet_parameters(name, in_channels, options)
    return RESNET_PARAMETERS.get(name)


def _text_parameters(name: str, options: dict) -> int:
    """core.backbones.text.TextTransformer: token and position tables, an embedding norm, `depth`
    pre-norm blocks (two norms, qkv, projection, a two-layer MLP of int(dim * mlp_ratio)), a final norm."""
    defaults = {p.name: p.default for p in inspect.signature(BACKBONES[name]).parameters.values()}
    value = lambda key: options.get(key, defaults[key])  # noqa: E731
    d, depth, vocab, positions = value("dim"), value("depth"), value("vocab_size"), value("max_length")
    hidden = int(d * value("mlp_ratio"))
    block = 2 * d + (3 * d * d + 3 * d) + (d * d + d) + 2 * d + (d * hidden + hidden) + (hidden * d + d)
    return vocab * d + positions * d + 2 * d + depth * block + 2 * d



def regnet_parameters(name: str, in_channels: int, options: dict) -> int | None:
    """From the design's arithmetic alone (no module is built); None for a design torchvision refuses
    (building it then names the problem)."""
    from core.backbones import regnet

    if name == "regnet_y":
        defaults = {p.name: p.default for p in inspect.signature(BACKBONES[name]).parameters.values()}
        design = regnet.Design(*(options.get(k, defaults[k]) for k in regnet.Design._fields))
    else:
        design = regnet.SIZES[name.removeprefix("regnet_y_")]
    try:
        return regnet.parameter_count(design, in_channels)
    except ValueError:
        return None


def token_count(name: str, image_size: int, options: dict) -> int | None:
    """Tokens per image of a ViT (attention memory grows with their square); None for CNNs."""
    if not name.startswith("vit_"):
        return None
    defaults = {p.name: p.default for p in inspect.signature(BACKBONES[name]).parameters.values()}
    patch = options.get("patch_size", defaults["patch_size"])
    return math.ceil(image_size / patch) ** 2
