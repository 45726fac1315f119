"""One tiny SimCLR run of the real training loop, for 1 or N ranks (importable by spawned ranks)."""
from __future__ import annotations

import torch
from torch.nn.parallel import DistributedDataParallel

from core import distributed
from core.checkpoint import load_tree, save_tree
from core.train import Callbacks, TrainConfig, train
from core.methods import build
from tests.core.tiny import IMAGE_SIZE, TINY_OPTIONS, TINY_VIT, digits_16

STEPS = 6


def build_method(name: str = "simclr"):
    """A tiny ViT: no max-pooling, whose ties on the digits' flat background would route gradients
    differently for weights a rounding error apart and make two exact runs diverge."""
    torch.manual_seed(1)
    return build(name, backbone="vit_tiny", in_channels=1, image_size=IMAGE_SIZE, mean=[0.3], std=[0.35],
                 backbone_options=dict(TINY_VIT), proj_hidden_dim=TINY_OPTIONS["proj_hidden_dim"],
                 proj_dim=TINY_OPTIONS["proj_dim"])


class Recorder(Callbacks):
    def __init__(self, stop_at: int | None, save_path: str | None):
        self.stop_at, self.save_path = stop_at, save_path
        self.losses: dict[int, float] = {}

    def on_log(self, step, logs):
        self.losses[step] = logs["loss"]

    def should_stop(self, step):
        return "stopped" if step == self.stop_at else None

    def on_checkpoint(self, step, state, final):
        if final and self.save_path:
            save_tree(self.save_path, state)


def run(method_name: str = "simclr", stop_at: int | None = None, save_path: str | None = None,
        resume_path: str | None = None, steps: int = STEPS, agree_every: int = 1) -> dict[str, torch.Tensor]:
    """The method's tensors after the run, plus `losses` (step-indexed, NaN where not logged) and
    `stopped_at`. agree_every 1: rank 0's stop takes effect on the step it asks for."""
    torch.set_num_threads(1)
    method = build_method(method_name)
    images, _ = digits_16(128)
    config = TrainConfig(steps=steps, batch_size=32, optimizer="lars", lr=0.3, weight_decay=1e-5, warmup_steps=2,
                         seed=3, log_every=1, agree_every=agree_every)
    recorder = Recorder(stop_at, save_path)
    resume = load_tree(resume_path)[0] if resume_path else None
    result = train(method, images, config, "cpu", recorder, resume)
    losses = torch.full((steps + 1,), float("nan"))
    for step, value in recorder.losses.items():
        losses[step] = value
    out = {f"state.{k}": v for k, v in method.state_dict().items() if v.is_floating_point()}
    out["losses"] = losses
    out["stopped_at"] = torch.tensor([result.step])
    out["world"] = torch.tensor([distributed.world_size()])
    return out


class RecordingDDP(DistributedDataParallel):
    """DistributedDataParallel that remembers the find_unused_parameters it was given."""
    received: list[bool] = []

    def __init__(self, *args, find_unused_parameters: bool = False, **kwargs):
        RecordingDDP.received.append(find_unused_parameters)
        super().__init__(*args, find_unused_parameters=find_unused_parameters, **kwargs)


def run_every_method(steps: int = 2) -> dict[str, torch.Tensor]:
    """Every registered method for a few steps (tiny sizes): each method's float tensors, and
    (on several ranks) `<name>.find_unused`, the flag its DistributedDataParallel received.
    SwAV's prototypes stay frozen for the first step, so it trains with a parameter unused."""
    import core.train
    from core.methods import method_info, method_names
    from tests.core.tiny import build_tiny

    torch.set_num_threads(1)
    images, _ = digits_16(64)
    out = {}
    core.train.DistributedDataParallel = RecordingDDP
    try:
        for name in [n for n in method_names() if method_info(n).modality == "image"]:
            method = build_tiny(name, seed=2)
            if name == "swav":
                method.freeze_prototypes_steps = 1
            RecordingDDP.received.clear()
            train(method, images, TrainConfig(steps=steps, batch_size=16, lr=1e-3, seed=5, log_every=1))
            out.update({f"{name}.{k}": v for k, v in method.state_dict().items() if v.is_floating_point()})
            if RecordingDDP.received:
                out[f"{name}.find_unused"] = torch.tensor(RecordingDDP.received)
    finally:
        core.train.DistributedDataParallel = DistributedDataParallel
    return out
