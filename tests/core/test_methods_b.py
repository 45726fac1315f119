"""DINO, SwAV, DeepCluster-v2, Barlow Twins and VICReg as methods: registration, gradient flow,
and their state (teacher EMA, center, queue, prototypes, memory bank) following the papers."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from core.losses.dino import updated_center
from core.methods import build, method_info
from core.methods.dino import teacher_temperature
from core.methods.multicrop import split_crops
from core.methods.momentum import momentum_at

NAMES = ["dino", "swav", "deepcluster_v2", "barlow_twins", "vicreg"]
SMALL = {"proj_hidden_dim": 16, "proj_dim": 8, "out_dim": 12, "bottleneck_dim": 8, "num_prototypes": 6,
         "queue_size": 32}


def tiny(name: str, scale: str | None = None, **options):
    torch.manual_seed(0)
    backbone, backbone_options = ("vit_tiny", {"dim": 16, "depth": 1, "heads": 2, "patch_size": 4}) \
        if name == "dino" else ("small_cnn", {"width": 4})
    known = method_info(name).options()
    small = {k: v for k, v in SMALL.items() if k in known}
    return build(name, backbone=backbone, in_channels=1, image_size=16, backbone_options=backbone_options,
                 scale=scale, **{**small, **options})


def images(n: int = 8, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (n, 1, 16, 16), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("name", NAMES)
def test_registered_with_standard_option_names_and_paper(name):
    info = method_info(name)
    assert info.paper.startswith("arXiv:")
    assert {"proj_hidden_dim"} <= set(info.options())
    method = tiny(name)
    loss, logs = method.training_step(images(), gen(), 0, 10)
    assert loss.ndim == 0 and torch.isfinite(loss)
    assert all(isinstance(float(v), float) for v in logs.values())
    assert set(method.parts()) >= {"backbone", "heads"}


def test_dino_views_are_two_global_and_several_local_crops():
    method = tiny("dino", scale="large")  # the paper's multi-crop (the small recipe has none, as solo-learn's)
    global_crops, local_crops = split_crops(method.views(images(), gen()))
    assert len(global_crops) == 2 and len(local_crops) >= 2
    assert global_crops[0].shape[-1] == 16 and local_crops[0].shape[-1] == round(16 * 96 / 224)  # 96 px at 224


def test_dino_teacher_gets_no_gradient_and_student_does():
    method = tiny("dino")
    loss, _ = method.training_step(images(), gen(), 5, 10)
    loss.backward()
    assert all(p.grad is None and not p.requires_grad for p in method.teacher_backbone.parameters())
    assert all(p.grad is None for p in method.teacher_head.parameters())
    assert all(p.grad is not None for p in method.backbone.parameters() if p.requires_grad)
    assert method.head.last_layer.weight.grad is not None


def test_dino_last_layer_is_named_for_the_training_loop_to_freeze():
    """The loop drops the gradient of parameters named "last_layer" during the recipe's first
    steps (DINO's cancel_gradients_last_layer); the method itself has no freeze option."""
    method = tiny("dino")
    assert "freeze_last_layer_frac" not in method_info("dino").options()
    trainable = [name for name, p in method.named_parameters() if "last_layer" in name and p.requires_grad]
    assert trainable == ["head.last_layer.weight"]


def test_dino_center_update_equals_the_formula():
    method = tiny("dino")
    method.center.normal_()
    before = method.center.clone()
    global_crops, _ = split_crops(method.views(images(), gen(3)))
    with torch.no_grad():
        teacher = method.teacher_head(method.teacher_backbone(torch.cat(global_crops))).chunk(2)
    method.training_step(images(), gen(3), 0, 10)
    expected = 0.9 * before + 0.1 * torch.cat(teacher).mean(0)
    torch.testing.assert_close(method.center, expected)
    torch.testing.assert_close(method.center, updated_center(before, teacher, 0.9))


def test_dino_teacher_is_an_ema_of_the_student_with_cosine_momentum():
    method = tiny("dino", scale="large")  # the paper's momentum 0.996
    with torch.no_grad():
        for p in method.backbone.parameters():
            p.add_(1.0)
    student = [p.clone() for p in method.backbone.parameters()]
    teacher = [p.clone() for p in method.teacher_backbone.parameters()]
    position = method.teacher_backbone.pos_embed.clone()
    method.after_step(25, 100)
    assert torch.equal(method.teacher_backbone.pos_embed, position)  # fixed buffers never drift
    m = momentum_at(25, 100, 0.996, 1.0)
    assert 0.996 < m < 1.0
    assert momentum_at(0, 100, 0.996) == pytest.approx(0.996) and momentum_at(100, 100, 0.996) == pytest.approx(1.0)
    for t0, s, t1 in zip(teacher, student, method.teacher_backbone.parameters()):
        torch.testing.assert_close(t1, m * t0 + (1 - m) * s)


def test_dino_teacher_temperature_warms_up_over_its_steps():
    assert teacher_temperature(0, 30, 0.04, 0.07) == pytest.approx(0.04)
    assert teacher_temperature(15, 30, 0.04, 0.07) == pytest.approx(0.055)
    assert teacher_temperature(30, 30, 0.04, 0.07) == pytest.approx(0.07)
    assert teacher_temperature(90, 30, 0.04, 0.07) == pytest.approx(0.07)
    assert teacher_temperature(0, 0, 0.04, 0.07) == pytest.approx(0.07)


def test_swav_prototypes_are_normalised_after_each_step_and_frozen_at_first():
    method = tiny("swav", freeze_prototypes_frac=0.5)
    loss, _ = method.training_step(images(), gen(), 0, 10)
    loss.backward()
    assert method.prototypes.weight.grad is None
    method.zero_grad()
    loss, _ = method.training_step(images(), gen(), 6, 10)
    loss.backward()
    assert method.prototypes.weight.grad is not None
    with torch.no_grad():
        method.prototypes.weight.mul_(3.0)
    method.after_step(6, 10)
    torch.testing.assert_close(method.prototypes.weight.norm(dim=1), torch.ones(6))


def test_swav_queue_fills_after_its_start_and_is_used_once_full():
    method = tiny("swav", queue_size=16, queue_start_frac=0.2)
    method.training_step(images(), gen(0), 0, 10)  # before the queue starts
    assert method.queue.abs().sum() == 0
    _, logs = method.training_step(images(), gen(1), 2, 10)
    assert logs["queue_used"] == 0.0 and method.queue[:, :8].abs().sum() > 0 and method.queue[:, 8:].abs().sum() == 0
    method.training_step(images(), gen(2), 3, 10)
    torch.testing.assert_close(method.queue.norm(dim=-1), torch.ones(2, 16))  # unit-norm embeddings
    _, logs = method.training_step(images(), gen(3), 4, 10)
    assert logs["queue_used"] == 1.0


def test_swav_codes_carry_no_gradient_into_the_prototypes_through_targets():
    method = tiny("swav")
    x = F.normalize(torch.randn(8, 8), dim=1)
    from core.losses.swav import sinkhorn
    assert not sinkhorn(method.prototypes(x)).requires_grad


def test_deepcluster_clusters_the_bank_once_per_pass_over_the_data():
    method = tiny("deepcluster_v2", queue_size=32, num_prototypes=4, num_heads=2)
    assert method.centroids.abs().sum() == 0  # no clusters before the first pass is over
    dataset = images(16)
    refreshed = []
    for step in range(5):  # batches of 8 over 16 images: a pass every 2 steps
        batch = dataset[(step % 2) * 8:(step % 2) * 8 + 8]
        loss, logs = method.training_step(batch, gen(step), step, 10)
        refreshed.append(logs["reclustered"])
    assert refreshed == [0.0, 0.0, 1.0, 0.0, 1.0]
    assert int(method.memory.occupied().sum()) == 16  # one entry per image, both global crops
    torch.testing.assert_close(method.centroids.norm(dim=-1), torch.ones(2, 4))
    torch.testing.assert_close(method.memory.embeddings[:, :16].norm(dim=-1), torch.ones(2, 16))
    loss, _ = method.training_step(images(seed=9), gen(9), 3, 10)
    loss.backward()
    assert all(p.grad is not None for p in method.projector.parameters())


def test_deepcluster_loss_before_clustering_is_log_k():
    method = tiny("deepcluster_v2", num_prototypes=6)
    loss, _ = method.training_step(images(), gen(), 0, 10)
    assert loss.item() == pytest.approx(torch.log(torch.tensor(6.0)).item(), rel=1e-6)


def test_deepcluster_rejects_more_prototypes_than_bank_entries():
    with pytest.raises(ValueError, match="queue_size"):
        tiny("deepcluster_v2", num_prototypes=64, queue_size=32)


@pytest.mark.parametrize("name", ["barlow_twins", "vicreg"])
def test_redundancy_reduction_projector_has_three_layers_and_trains_end_to_end(name):
    method = tiny(name)
    linears = [m for m in method.projector if isinstance(m, torch.nn.Linear)]
    assert len(linears) == 3
    loss, _ = method.training_step(images(), gen(), 0, 10)
    loss.backward()
    assert all(p.grad is not None for p in method.parameters() if p.requires_grad)


def test_vicreg_logs_its_three_terms():
    _, logs = tiny("vicreg").training_step(images(), gen(), 0, 10)
    assert set(logs) == {"invariance", "variance", "covariance"}
