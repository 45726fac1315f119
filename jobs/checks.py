"""The checks every submit makes, whatever the modality: method and backbone options within
bounds, the model's estimated and built size under the limit, checkpoints of the project."""
from __future__ import annotations

import json
from functools import lru_cache

import torch
from sqlalchemy.orm import Session

from core.backbones.sizes import check_options, estimate_parameters
from core.methods import build_resolved, method_info
from jobs.specs import BASELINES
from jobs.tables import Checkpoint


class SpecRejected(ValueError):
    """The spec is well-formed but cannot run (e.g. batch larger than the dataset)."""


def try_build(method: str, recipe: dict, channels: int) -> torch.nn.Module:
    """Build the method on the meta device (no memory, no compute) so that bad augmentation,
    backbone or method options are a 422 now rather than a failed job later."""
    try:
        with torch.device("meta"):
            return build_resolved(recipe, channels)
    except (TypeError, ValueError, OverflowError) as exc:
        raise SpecRejected(f"cannot build {method}: {exc}") from exc


# What core.methods.build_resolved reads of a recipe: the same values build the same model.
BUILD_KEYS = ("modality", "method", "scale", "image_size", "backbone", "backbone_options", "views", "method_options")


@lru_cache(maxsize=256)
def _built_size(method: str, build_recipe: str, channels: int) -> int:
    return parameter_count(try_build(method, json.loads(build_recipe), channels))


def built_size(method: str, recipe: dict, channels: int) -> int:
    """try_build's parameter count, remembered for the recipe's build values: specs that differ
    only in what the build does not read (seed, steps, learning rate, ...) are built once. Only
    successes are remembered; a recipe that cannot build raises SpecRejected every time."""
    build_recipe = json.dumps({key: recipe.get(key) for key in BUILD_KEYS}, sort_keys=True)
    return _built_size(method, build_recipe, channels)


LAYER_COUNTS = ("depth", "heads", "targets")  # each one more module: built one by one even on the meta device


def check_method_options(method: str, options: dict) -> None:
    """Integer method options within bounds before anything is built: layer counts (decoder_depth,
    num_heads, ...) at most 64, other counts at most 64 times the method's default (sizes are
    then caught by the parameter count)."""
    defaults = method_info(method).options()
    for name, value in options.items():
        default = defaults.get(name)
        if isinstance(default, bool) or not isinstance(default, int):
            continue
        bound = 64 if any(word in name for word in LAYER_COUNTS) else max(64, 64 * default)
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= bound:
            raise SpecRejected(f"method_options.{name} must be an integer from 0 to {bound:,}")


def check_backbone(name: str, options: dict, channels: int, image_size: int, max_parameters: int | None) -> None:
    """Known options of the right types within bounds, and an estimated size under the limit,
    before any module is built (a huge depth would take the API's memory and time even on meta)."""
    try:
        check_options(name, options)
    except ValueError as exc:
        raise SpecRejected(str(exc)) from exc
    check_estimate(name, options, channels, image_size, max_parameters)


def check_estimate(name: str, options: dict, channels: int, image_size: int, max_parameters: int | None) -> None:
    estimate = estimate_parameters(name, channels, image_size, options)
    if max_parameters and estimate is not None and estimate > max_parameters:
        raise SpecRejected(f"backbone {name} with {options} would have about {estimate:,} parameters; "
                           f"at most {max_parameters:,} (DARKMATTER_MAX_MODEL_PARAMETERS)")


def parameter_count(model: torch.nn.Module) -> int:
    """Parameters and buffers, heads and queues included."""
    return sum(t.numel() for t in model.parameters()) + sum(t.numel() for t in model.buffers())


def check_size(what: str, size: int, max_parameters: int | None) -> None:
    """A built (meta) model's parameter_count under the limit."""
    if max_parameters and size > max_parameters:
        raise SpecRejected(f"{what} would have {size:,} parameters and buffers; at most {max_parameters:,} "
                           "(DARKMATTER_MAX_MODEL_PARAMETERS)")


class CheckpointNotFound(LookupError):
    pass


def check_checkpoint(session: Session, project_id: str, checkpoint_id: str) -> Checkpoint:
    ckpt = session.get(Checkpoint, checkpoint_id)
    if ckpt is None or ckpt.project_id != project_id:
        raise CheckpointNotFound(f"checkpoint {checkpoint_id!r} not found (baselines: {', '.join(BASELINES)})")
    return ckpt
