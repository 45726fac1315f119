"""The recipes against their reference code's numbers, as the training loop applies them:
per-group LRs (Barlow Twins' biases and norms, SimSiam's fixed-LR predictor)."""
from __future__ import annotations

import math

import pytest
import torch

from core.methods.registry import build_resolved
from core.optim import build_optimizer
from core.recipes import resolve
from core import train as loop
from core.train import TrainConfig, apply_schedules, train


def one_large_barlow_step(n_items: int = 64, batch: int = 32):
    """One loop step of Barlow Twins' `large` recipe at its peak LR, on a ResNet-18 (ResNet-50's
    8192-wide projector is too large for a CPU test) with a 512-wide projector, on 32 px noise.
    Returns the method before and after and the resolved train settings."""
    resolved = resolve("barlow_twins", 32, n_items, {
        "scale": "large", "backbone": "resnet18", "steps": 1, "warmup_steps": 0, "batch_size": batch,
        "method_options": {"proj_hidden_dim": 512, "proj_dim": 512}})
    torch.manual_seed(0)
    method = build_resolved(resolved)
    before = {name: p.detach().clone() for name, p in method.named_parameters()}
    images = torch.randint(0, 256, (n_items, 3, 32, 32), generator=torch.Generator().manual_seed(0),
                           dtype=torch.uint8)
    train(method, images, TrainConfig(**resolved["train"]))
    return method, before, resolved["train"]


def test_barlow_large_gives_biases_and_norms_the_reference_lr():
    method, before, settings = one_large_barlow_step()
    lr = 0.2 * 32 / 256  # --learning-rate-weights 0.2 x batch / 256
    assert settings["lr"] == pytest.approx(lr)
    assert settings["lr_groups"] == {"biases_and_norms": {"lr_scale": pytest.approx(0.0048 / 0.2)}}
    moved, size = 0.0, 0.0
    for name, p in method.named_parameters():
        if p.ndim != 1:
            continue
        # the first step of plain momentum SGD (LARS skips 1-D parameters): p -= lr_biases * grad
        expected = before[name] - 0.0048 * 32 / 256 * p.grad
        # float32 rounding only (2 ulps; the weights' LR would be off by 0.6 here)
        torch.testing.assert_close(p.detach(), expected, rtol=2.4e-7, atol=1e-7, msg=name)
        moved += float((p.detach() - before[name]).pow(2).sum())
        size += float(before[name].pow(2).sum())
    assert (moved / size) ** 0.5 < 0.05  # a small fraction of the bias/norm vector's size


def test_lr_scale_holds_through_warm_up_and_fixed_lr_keeps_the_peak():
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.BatchNorm1d(8), torch.nn.Linear(8, 2))
    groups = {"biases_and_norms": {"lr_scale": 0.1}, "2": {"fixed_lr": True}}
    config = TrainConfig(steps=100, optimizer="sgd", lr=0.5, warmup_steps=10, final_lr=0.0, lr_groups=groups)
    optimizer = build_optimizer("sgd", model, lr=0.5, weight_decay=1e-4, lr_groups=groups)
    owner = {id(p): name for name, p in model.named_parameters()}
    for step in (0, 4, 9, 50, 99):
        scheduled = 0.5 * (step + 1) / 10 if step < 10 else None
        lr, _ = apply_schedules(optimizer, config, step)
        if scheduled is not None:
            assert lr == pytest.approx(scheduled)
        for group in optimizer.param_groups:
            for p in group["params"]:
                name = owner[id(p)]
                if name == "2.weight":  # the fixed-LR module; its bias matches the first selector
                    want = 0.5
                else:
                    want = lr * (0.1 if p.ndim == 1 else 1.0)
                assert group["lr"] == pytest.approx(want), (step, name)


def test_simsiam_predictor_keeps_the_peak_lr_in_the_loop(monkeypatch):
    resolved = resolve("simsiam", 16, 64, {"steps": 3, "batch_size": 32, "backbone": "small_cnn",
                                           "backbone_options": {"width": 8},
                                           "method_options": {"proj_hidden_dim": 32, "proj_dim": 16,
                                                              "pred_hidden_dim": 8}})
    assert resolved["train"]["lr_groups"] == {"predictor": {"fixed_lr": True}}
    torch.manual_seed(0)
    method = build_resolved(resolved, in_channels=1)
    names = {id(p): n for n, p in method.named_parameters()}
    lrs, real = [], loop.apply_schedules

    def spy(optimizer, config, step):  # the LRs the optimiser holds for each step, as the loop set them
        out = real(optimizer, config, step)
        lrs.append({names[id(g["params"][0])].startswith("predictor."): g["lr"]
                    for g in optimizer.param_groups if g["params"]})
        return out

    monkeypatch.setattr(loop, "apply_schedules", spy)
    train(method, torch.randint(0, 256, (64, 1, 16, 16), dtype=torch.uint8),
          TrainConfig(**{**resolved["train"], "warmup_steps": 2}))
    peak = 0.5 * 32 / 256
    assert [d[True] for d in lrs] == pytest.approx([peak] * 3)  # the predictor
    assert [d[False] for d in lrs][:2] == pytest.approx([peak / 2, peak])  # the rest warms up


# ---- DINO large: drop path, local crops, teacher-temperature warm-up, last layer ---------------------

TINY_VIT = {"dim": 32, "depth": 4, "heads": 2, "patch_size": 8}
TINY_HEAD = {"out_dim": 64, "proj_hidden_dim": 32, "bottleneck_dim": 16}


def dino_large(n_items: int = 100, **overrides):
    return resolve("dino", 224, n_items, {"batch_size": 10, "backbone_options": TINY_VIT,
                                          "method_options": TINY_HEAD, **overrides})


def test_dino_large_student_drops_paths_and_the_teacher_does_not():
    resolved = dino_large(steps=1)
    assert resolved["backbone_options"]["drop_path_rate"] == 0.1
    method = build_resolved({**resolved, "image_size": 32})
    rates = [block.drop_path for block in method.backbone.blocks]
    assert rates == pytest.approx([0.0, 0.1 / 3, 0.2 / 3, 0.1])  # linear over depth, as DINO's dpr
    assert all(block.drop_path == 0.0 for block in method.teacher_backbone.blocks)
    method.train()
    x = torch.randn(64, 3, 32, 32)
    torch.manual_seed(1)
    a, b = method.backbone(x), method.backbone(x)
    assert not torch.allclose(a, b)  # training mode: each pass drops other samples' branches
    torch.testing.assert_close(method.teacher_backbone(x), method.teacher_backbone(x))


def test_dino_large_local_crops_are_96_px_at_224():
    from core.augment import ViewConfig, ViewMaker

    views = ViewMaker(ViewConfig.from_dict(dino_large(steps=1)["views"]), [0.5] * 3, [0.25] * 3)
    sides = [v.shape[-1] for v in views(torch.zeros(2, 3, 224, 224, dtype=torch.uint8), torch.Generator())]
    assert sides == [224, 224] + [96] * 8


@pytest.mark.parametrize("epochs, points, expected", [
    (100, "absolute", 300), (300, "absolute", 300), (10, "absolute", 100), (300, "proportional", 300),
    (50, "proportional", 150)])
def test_dino_teacher_temperature_warms_up_over_30_absolute_epochs(epochs, points, expected):
    # 100 items at batch 10: 10 steps per epoch; main_dino.py --warmup_teacher_temp_epochs 30
    resolved = dino_large(epochs=epochs, schedule_points=points)
    assert resolved["method_options"]["warmup_teacher_temp_steps"] == expected  # capped at the run (10 epochs)
    method = build_resolved({**resolved, "image_size": 32})
    assert method.warmup_teacher_temp_steps == expected
    _, logs = method.training_step(torch.randint(0, 256, (10, 3, 32, 32), dtype=torch.uint8),
                                   torch.Generator().manual_seed(0), 150, resolved["train"]["steps"])
    assert logs["teacher_temp"] == pytest.approx(0.04 + 0.03 * min(150 / expected, 1.0))


def test_dino_last_layer_starts_as_the_reference_nn_linear():
    from core.heads.dino import DINOHead

    torch.manual_seed(0)
    weight = DINOHead(384, 2048, 256, 65536).last_layer.weight
    bound = 1 / 256**0.5  # nn.Linear's default: kaiming_uniform(a=sqrt(5)) = U(-1/sqrt(fan_in), 1/sqrt(fan_in))
    assert weight.abs().max().item() <= bound
    assert weight.std().item() == pytest.approx(bound / 3**0.5, rel=0.01)  # the uniform's std, not 0.02


def test_dino_logits_and_swav_scores_are_float32_under_bf16_autocast():
    from core.heads.dino import DINOHead
    from core.heads.prototypes import Prototypes

    torch.manual_seed(0)
    head, prototypes = DINOHead(32, 64, 16, 128), Prototypes(16, 30)
    x = torch.randn(8, 32)
    z = torch.nn.functional.normalize(torch.randn(8, 16), dim=1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits, bottleneck, scores = head(x), head.mlp(x), prototypes(z)
    assert logits.dtype == scores.dtype == torch.float32 and bottleneck.dtype == torch.bfloat16
    expected = torch.nn.functional.normalize(bottleneck.float(), dim=-1) @ torch.nn.functional.normalize(
        head.last_layer.weight, dim=1).T
    torch.testing.assert_close(logits, expected, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(scores, z @ prototypes.weight.T, rtol=1e-6, atol=1e-6)


# ---- VICReg small, MoCo v2 ---------------------------------------------------------------------

def test_vicreg_small_adds_the_branches_variance_terms_as_solo_learn():
    from core.losses.vicreg import vicreg_loss

    z1 = torch.randn(32, 8, generator=torch.Generator().manual_seed(0)) * 0.3
    z2 = torch.randn(32, 8, generator=torch.Generator().manual_seed(1)) * 0.5

    def hinge(z):  # solo-learn variance_loss, one branch: mean(relu(1 - sqrt(var + 1e-4)))
        return torch.relu(1 - torch.sqrt(z.var(dim=0) + 1e-4)).mean()

    assert resolve("vicreg", 32, 1000)["method_options"]["sum_branch_variance"] is True
    assert resolve("vicreg", 224, 1000)["method_options"]["sum_branch_variance"] is False  # official: averaged
    _, summed = vicreg_loss(z1, z2, sum_branch_variance=True)
    _, averaged = vicreg_loss(z1, z2)
    torch.testing.assert_close(summed["variance"], hinge(z1) + hinge(z2))
    torch.testing.assert_close(averaged["variance"], (hinge(z1) + hinge(z2)) / 2)
    method = build_resolved(resolve("vicreg", 16, 64, {"batch_size": 32, "backbone": "small_cnn",
                                                       "backbone_options": {"width": 8},
                                                       "method_options": {"proj_hidden_dim": 16, "proj_dim": 8}}),
                            in_channels=1)
    assert method.sum_branch_variance is True


def tiny_moco(scale: str, **overrides):
    resolved = resolve("moco_v2", 16 if scale == "small" else 96, 256, {
        "scale": scale, "batch_size": 32, "backbone": "small_cnn", "backbone_options": {"width": 8},
        "method_options": {"proj_hidden_dim": 16, "proj_dim": 8, "queue_size": 64}, **overrides})
    return build_resolved({**resolved, "image_size": 16}, in_channels=1), resolved


def test_moco_v2_large_holds_the_momentum_at_0999_and_small_ends_at_solo_learns_0999():
    large, resolved = tiny_moco("large")
    assert (resolved["method_options"]["momentum"], resolved["method_options"]["final_momentum"]) == (0.999, 0.999)
    online = {n: p.detach().clone() for n, p in large.backbone.named_parameters()}
    for name, p in large.backbone.named_parameters():
        p.data.add_(1.0)
    for step in (0, 50, 99):
        before = {n: p.clone() for n, p in large.momentum_backbone.named_parameters()}
        large.after_step(step, 100)
        for name, p in large.momentum_backbone.named_parameters():
            torch.testing.assert_close(p, 0.999 * before[name] + 0.001 * (online[name] + 1.0))
    small, _ = tiny_moco("small")
    _, logs = small.training_step(torch.randint(0, 256, (32, 1, 16, 16), dtype=torch.uint8),
                                  torch.Generator().manual_seed(0), 100, 100)
    assert logs["momentum"] == pytest.approx(0.999)  # solo-learn mocov2plus.yaml final_tau


def test_moco_v2_keeps_one_queue_per_view_and_each_query_meets_the_other_views_past_keys(monkeypatch):
    from core.methods import moco_v2

    method, _ = tiny_moco("small")
    seen = []
    real = moco_v2.info_nce
    monkeypatch.setattr(moco_v2, "info_nce", lambda q, k, negatives, t: seen.append(negatives) or real(q, k,
                                                                                                         negatives, t))
    first = [q.items.clone() for q in method.queues]
    images = torch.randint(0, 256, (32, 1, 16, 16), dtype=torch.uint8)
    method.training_step(images, torch.Generator().manual_seed(0), 0, 10)
    torch.testing.assert_close(seen[0], first[1])  # q1 . k2 against the queue of view-2 keys
    torch.testing.assert_close(seen[1], first[0])
    v1, v2 = method.views(images, torch.Generator().manual_seed(0))[:2]
    with torch.no_grad():
        k1, k2 = (torch.nn.functional.normalize(method.momentum_projector(method.momentum_backbone(v)), dim=1)
                  for v in (v1, v2))
    torch.testing.assert_close(method.queues[0].items[:32], k1)  # 32 keys per view and step, not 64 in one queue
    torch.testing.assert_close(method.queues[1].items[:32], k2)
    assert int(method.queues[0].ptr) == int(method.queues[1].ptr) == 32


# ---- LeJEPA global views, multi-crop batch norm --------------------------------------------------

def test_lejepa_counts_every_crop_of_the_largest_size_as_global():
    from core.methods import build

    augment = {"crops": [{"count": 1, "size": 1.0, "scale": [0.3, 1.0]}, {"count": 1, "size": 1.0, "scale": [0.3, 1.0]},
                         {"count": 2, "size": 0.5, "scale": [0.05, 0.3]}]}
    method = build("lejepa", "small_cnn", in_channels=1, image_size=16, augment=augment,
                   backbone_options={"width": 8}, proj_hidden_dim=16, proj_dim=8, num_slices=8)
    assert method.num_global == 2  # the first spec alone has 1


@pytest.mark.parametrize("name", ["swav", "deepcluster_v2"])
def test_multicrop_projector_batch_norm_sees_all_crops_at_once(name):
    from core.methods import build

    augment = {"crops": [{"count": 2, "size": 1.0, "scale": [0.3, 1.0]}, {"count": 2, "size": 0.5,
                                                                           "scale": [0.05, 0.3]}]}
    options = {"proj_hidden_dim": 16, "proj_dim": 8, "num_prototypes": 4, "queue_size": 64}
    if name == "deepcluster_v2":
        options["num_heads"] = 1
    method = build(name, "small_cnn", in_channels=1, image_size=16, augment=augment, backbone_options={"width": 8},
                   **options)
    batches = []
    method.projector.register_forward_pre_hook(lambda module, args: batches.append(len(args[0])))
    method.training_step(torch.randint(0, 256, (8, 1, 16, 16), dtype=torch.uint8), torch.Generator(), 0, 10)
    assert batches == [4 * 8]  # one projector pass over the 2 global and 2 local crops of 8 images


def test_swav_queue_start_and_prototype_freeze_count_absolute_epochs():
    # 1000 images at batch 10: 100 steps per epoch; a 50-epoch run of the 200-epoch recipe
    resolved = resolve("swav", 224, 1000, {"batch_size": 10, "epochs": 50, "backbone": "small_cnn",
                                           "method_options": {"proj_hidden_dim": 16, "proj_dim": 8,
                                                              "num_prototypes": 4, "queue_size": 20}})
    options = resolved["method_options"]
    # --epoch_queue_starts 15 and one epoch of frozen prototypes, not 15/200 and 1/200 of the run (375, 25)
    assert (options["queue_start_steps"], options["freeze_prototypes_steps"]) == (1500, 100)
    method = build_resolved({**resolved, "image_size": 32})
    images = torch.randint(0, 256, (10, 3, 32, 32), dtype=torch.uint8)
    loss, logs = method.training_step(images, torch.Generator(), 99, 5000)
    loss.backward()
    assert method.prototypes.weight.grad is None and method.queue.abs().sum() == 0
    method.zero_grad()
    loss, _ = method.training_step(images, torch.Generator(), 1500, 5000)
    loss.backward()
    assert method.prototypes.weight.grad is not None and method.queue.abs().sum() > 0


# ---- DeepCluster-v2: dataset indices, a bank of the dataset, k-means once per epoch ----------------

def test_deepcluster_trains_on_its_own_labels_from_step_0_and_clusters_once_per_epoch():
    from core.train import Callbacks
    from tests.core.tiny import digits_16

    images, _ = digits_16(100)  # 6 batches of 16 and 4 images over
    resolved = resolve("deepcluster_v2", 16, len(images), {
        "batch_size": 16, "steps": 13, "backbone": "small_cnn", "backbone_options": {"width": 4},
        "method_options": {"proj_hidden_dim": 16, "proj_dim": 8, "num_prototypes": 6, "num_heads": 2}})
    options = resolved["method_options"]
    assert options["queue_size"] == 100 and options["cluster_every_steps"] == 6  # the dataset; one epoch of 6 steps
    torch.manual_seed(0)
    method = build_resolved(resolved, in_channels=1)
    logs = {}

    class Record(Callbacks):
        def on_log(self, step, values):
            logs[step] = values

    initial = {n: p.detach().clone() for n, p in method.backbone.named_parameters()}
    train(method, images, TrainConfig(**{**resolved["train"], "log_every": 1}), callbacks=Record())
    # the memory pass before step 0 labelled every image: each step's images found their own entry
    assert all(logs[s]["own_label_fraction"] == 1.0 for s in logs)
    assert (method.labels >= 0).all() and method.memory.occupied().all()  # the 4 left over too
    assert abs(logs[1]["loss"] - math.log(6)) > 1e-2  # clusters at step 0: not zero centroids' constant log K
    assert [s - 1 for s in sorted(logs) if logs[s]["reclustered"]] == [6, 12]  # epoch starts
    assert any(not torch.equal(p, initial[n]) for n, p in method.backbone.named_parameters())
    keys = method.memory.keys[:, 0]
    assert torch.equal(keys, torch.arange(100))  # each image in the slot of its dataset index


@pytest.mark.parametrize("points", ["absolute", "proportional"])
def test_deepcluster_clusters_once_per_pass_over_the_data_at_any_run_length(points):
    # the official main_deepclusterv2.py runs k-means at every epoch start: a period of the data, not a
    # point of the recipe's 1000 epochs (proportional, 1/1000 of a 200-step run was k-means every step)
    resolved = resolve("deepcluster_v2", 28, 60_000, {"steps": 200, "schedule_points": points})
    assert resolved["steps_per_epoch"] == 60_000 // 256
    assert resolved["method_options"]["cluster_every_steps"] == 234
    assert resolve("deepcluster_v2", 28, 60_000, {"steps": 200, "schedule_points": points, "method_options": {
        "cluster_every_steps": 7}})["method_options"]["cluster_every_steps"] == 7  # a spec's value wins


def test_deepcluster_indexed_run_resumes_exactly():
    from tests.core.tiny import digits_16

    images, _ = digits_16(64)
    resolved = resolve("deepcluster_v2", 16, len(images), {
        "batch_size": 16, "steps": 6, "backbone": "small_cnn", "backbone_options": {"width": 4},
        "method_options": {"proj_hidden_dim": 16, "proj_dim": 8, "num_prototypes": 4, "num_heads": 2}})
    config = TrainConfig(**{**resolved["train"], "log_every": 1, "checkpoint_every": 3})
    kept, losses = {}, {}

    class Keep(loop.Callbacks):
        def __init__(self, name):
            self.name = name

        def on_log(self, step, logs):
            losses[(self.name, step)] = logs["loss"]

        def on_checkpoint(self, step, state, final):
            if step == 3 and self.name == "straight":
                import copy

                kept["state"] = copy.deepcopy(state)

    torch.manual_seed(0)
    straight = build_resolved(resolved, in_channels=1)
    train(straight, images, config, callbacks=Keep("straight"))
    torch.manual_seed(1)
    resumed = build_resolved(resolved, in_channels=1)
    train(resumed, images, config, callbacks=Keep("resumed"), resume=kept["state"])
    for step in (4, 5, 6):  # k-means at the epoch start (step 4) replays too
        assert losses[("resumed", step)] == pytest.approx(losses[("straight", step)], rel=1e-5, abs=1e-6)
    torch.testing.assert_close(resumed.labels, straight.labels, rtol=0, atol=0)
