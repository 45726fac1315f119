"""The fast paths train like the eager fp32 run: channels_last for a ResNet method, torch.compile
for a ViT method, activation checkpointing for a ViT, over 20 steps on the CPU."""
from __future__ import annotations

import pytest
import torch

from core.methods import build
from core.train import Callbacks, TrainConfig, train
from tests.core.tiny import TINY_OPTIONS, TINY_VIT, digits_16

STEPS = 20
TOLERANCE = 2e-3  # float32 sums in another order (another memory layout, fused kernels) over 20 steps


class Losses(Callbacks):
    def __init__(self):
        self.values: list[float] = []

    def on_log(self, step, logs):
        self.values.append(logs["loss"])


def noise_images(channels: int = 3, size: int = 32) -> torch.Tensor:
    """Random pixels: no flat background, whose exact ties (ReLU at 0, equal conv outputs) a
    different summation order breaks differently, which would make two exact runs diverge."""
    return torch.randint(0, 256, (128, channels, size, size), generator=torch.Generator().manual_seed(2),
                         dtype=torch.uint8)


def losses(method_name: str, backbone: str, backbone_options: dict, images: torch.Tensor | None = None,
           lr: float = 0.02, **fast) -> tuple[list[float], dict]:
    torch.manual_seed(0)
    images = digits_16(128)[0] if images is None else images
    channels, size = images.shape[1], images.shape[-1]
    method = build(method_name, backbone=backbone, in_channels=channels, image_size=size, mean=[0.3] * channels,
                   std=[0.35] * channels,
                   backbone_options=backbone_options, proj_hidden_dim=TINY_OPTIONS["proj_hidden_dim"],
                   proj_dim=TINY_OPTIONS["proj_dim"])
    recorder = Losses()
    config = TrainConfig(steps=STEPS, batch_size=32, optimizer="sgd", lr=lr, seed=4, log_every=1, **fast)
    train(method, images, config, callbacks=recorder)
    return recorder.values, method.state_dict()


def assert_close(fast: list[float], eager: list[float]) -> None:
    assert len(fast) == len(eager) == STEPS
    worst = max(abs(a - b) / abs(b) for a, b in zip(fast, eager))
    assert worst <= TOLERANCE, (worst, fast, eager)


def simclr_gradients(dtype: torch.dtype, channels_last: bool) -> dict[str, torch.Tensor]:
    from core.losses.nt_xent import nt_xent
    from core.train import step_generator

    torch.manual_seed(0)
    method = build("simclr", backbone="resnet18", in_channels=3, image_size=32, mean=[0.3] * 3, std=[0.35] * 3,
                   backbone_options={"small_stem": False}, proj_hidden_dim=64, proj_dim=32).to(dtype)
    images = noise_images()[:32]
    if channels_last:
        method.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)
    v1, v2 = (v.to(dtype) for v in method.views(images, step_generator(4, 0, torch.device("cpu")))[:2])
    nt_xent(method.projector(method.backbone(v1)), method.projector(method.backbone(v2)), 0.1).backward()
    return {n: p.grad.double() for n, p in method.named_parameters() if p.grad is not None}


def worst_relative(a: dict, b: dict) -> float:
    return max(((a[k] - b[k]).abs().max() / a[k].abs().max()).item() for k in a)


def test_channels_last_resnet_gradients_are_as_exact_as_eager(one_thread):
    """Against a float64 run: a random-init ResNet under NT-Xent is so sharp that two float32 runs
    (any two layouts) part ways within a few steps, so the layouts are compared on one step's
    gradients. Which layout rounds closer depends on the CPU's oneDNN kernels: measured NCHW 3.4e-2 off
    (layer 4's 1x1 stride-2 conv on 2x2 maps) and channels_last 2.3e-5 on one machine, NCHW 7.9e-3 and
    channels_last 1.3e-2 on another. So channels_last must stay in float32's error class of the
    eager layout (a wrong gradient is off by O(1)), not beat it."""
    exact = simclr_gradients(torch.float64, channels_last=False)
    eager = worst_relative(exact, simclr_gradients(torch.float32, channels_last=False))
    fast = worst_relative(exact, simclr_gradients(torch.float32, channels_last=True))
    assert fast <= max(4 * eager, 1e-4) and fast < 0.1, (fast, eager)


def test_compiled_vit_trains_like_eager(one_thread):
    pytest.importorskip("torch._inductor")
    eager, _ = losses("byol", "vit_tiny", dict(TINY_VIT))
    fast, state = losses("byol", "vit_tiny", dict(TINY_VIT), compile="true")
    assert_close(fast, eager)
    assert not any("_orig_mod" in k for k in state)  # checkpoints keep their keys


def test_activation_checkpointing_vit_trains_like_eager(one_thread):
    eager, _ = losses("byol", "vit_tiny", dict(TINY_VIT))
    fast, _ = losses("byol", "vit_tiny", {**TINY_VIT, "grad_checkpointing": True})
    assert_close(fast, eager)


class AutocastProbe(Callbacks):
    """Records the dtype the backbone computed in, as the loop ran it."""

    def __init__(self, method):
        self.dtypes: list[torch.dtype] = []
        method.backbone.register_forward_hook(lambda module, args, out: self.dtypes.append(out.dtype))


@pytest.mark.parametrize("native", [True, False])
def test_precision_auto_is_bf16_where_the_cpu_has_native_bf16(one_thread, monkeypatch, native):
    import core.precision

    monkeypatch.setattr(core.precision, "_cpu_has_bf16", lambda: native)
    torch.manual_seed(0)
    method = build("simclr", backbone="small_cnn", in_channels=1, image_size=16, backbone_options={"width": 8},
                   proj_hidden_dim=32, proj_dim=16)
    probe = AutocastProbe(method)
    train(method, digits_16(64)[0], TrainConfig(steps=2, batch_size=16, optimizer="sgd", lr=0.01, precision="auto"),
          callbacks=probe)
    assert set(probe.dtypes) == {torch.bfloat16 if native else torch.float32}


def test_cpu_bf16_detection_follows_the_cpu_flags():
    from core.precision import _cpu_has_bf16

    with open("/proc/cpuinfo") as f:
        flags = set(next(line for line in f if line.startswith("flags")).split(":", 1)[1].split())
    assert _cpu_has_bf16() == (bool(flags & {"avx512_bf16", "amx_bf16"}) and torch.backends.mkldnn.is_available())


def test_logged_loss_is_the_mean_of_the_steps_since_the_last_log(one_thread):
    """Accumulated on the device and read every log_every steps: the mean of the per-step losses."""
    every_step, _ = losses("simclr", "small_cnn", {"width": 8}, images=noise_images(1, 16), precision="fp32")

    class Logged(Losses):
        def __init__(self):
            super().__init__()
            self.steps: list[int] = []

        def on_log(self, step, logs):
            super().on_log(step, logs)
            self.steps.append(step)

    torch.manual_seed(0)
    method = build("simclr", backbone="small_cnn", in_channels=1, image_size=16, mean=[0.3], std=[0.35],
                   backbone_options={"width": 8}, proj_hidden_dim=TINY_OPTIONS["proj_hidden_dim"],
                   proj_dim=TINY_OPTIONS["proj_dim"])
    recorder = Logged()
    train(method, noise_images(1, 16), TrainConfig(steps=STEPS, batch_size=32, optimizer="sgd", lr=0.02, seed=4,
                                                   log_every=8, precision="fp32"), callbacks=recorder)
    assert recorder.steps == [8, 16, 20]
    expected = [sum(every_step[0:8]) / 8, sum(every_step[8:16]) / 8, sum(every_step[16:20]) / 4]
    assert recorder.values == pytest.approx(expected, rel=1e-5)


def test_compile_auto_compiles_where_it_was_measured_to_help():
    from core.train import compiles

    convnet = build("simclr", backbone="small_cnn", in_channels=1, image_size=16, backbone_options={"width": 8})
    vit = build("byol", backbone="vit_tiny", in_channels=1, image_size=16, backbone_options=dict(TINY_VIT))
    auto = TrainConfig(steps=1, compile="auto")
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert compiles(convnet, auto, cuda) and not compiles(vit, auto, cuda)
    assert not compiles(convnet, auto, cpu) and not compiles(vit, auto, cpu)
    assert compiles(vit, TrainConfig(steps=1, compile="true"), cpu)
    assert not compiles(convnet, TrainConfig(steps=1, compile="false"), cuda)


def test_cuda_graphs_on_a_cpu_is_refused():
    method = build("simclr", backbone="small_cnn", in_channels=1, image_size=16, backbone_options={"width": 8})
    with pytest.raises(ValueError, match="cuda_graphs needs a CUDA device"):
        train(method, digits_16(64)[0], TrainConfig(steps=1, batch_size=16, cuda_graphs=True))
