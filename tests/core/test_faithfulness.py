"""Methods as their official code does them: data2vec's targets and EMA schedule, DeepCluster-v2's
per-image memory bank, DINO's head, and the ViT readouts."""
from __future__ import annotations

import copy
import inspect
import logging
import math

import pytest
import torch
import torch.nn.functional as F

from core.backbones import build_backbone
from core.checkpoint import load_backbone, save_tree
from core.methods.memory_bank import KeyedMemoryBank, image_keys


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def random_images(n: int, seed: int = 0, size: int = 16) -> torch.Tensor:
    return torch.randint(0, 256, (n, 1, size, size), generator=gen(seed), dtype=torch.uint8)


def build_method(name: str, backbone: str, backbone_options: dict, **options):
    from core.methods import build

    torch.manual_seed(0)
    return build(name, backbone=backbone, in_channels=1, image_size=16, mean=[0.3], std=[0.35],
                 backbone_options=backbone_options, **options)


def layer_norm(x: torch.Tensor) -> torch.Tensor:
    mu = x.mean(-1, keepdim=True)
    return (x - mu) / torch.sqrt(x.var(-1, unbiased=False, keepdim=True) + 1e-5)


# ---- data2vec ---------------------------------------------------------------------------------

TINY_VIT = {"dim": 16, "depth": 4, "heads": 2, "patch_size": 4}


def test_data2vec_defaults_are_the_paper_vision_run():
    from core.methods.data2vec import Data2Vec

    defaults = {k: p.default for k, p in inspect.signature(Data2Vec.__init__).parameters.items()}
    assert (defaults["momentum"], defaults["momentum_end"], defaults["momentum_anneal_frac"]) == (0.999, 0.9998, 1.0)
    method = build_method("data2vec", "vit_tiny", {**TINY_VIT, "depth": 12}, top_k=0)
    assert method.top_k == 6  # average_top_k_layers 6 of ViT-B's 12 blocks


def test_data2vec_loss_regresses_one_layer_norm_of_the_averaged_top_k_teacher_blocks():
    method = build_method("data2vec", "vit_tiny", TINY_VIT, top_k=3, mask_ratio=0.5)
    with torch.no_grad():  # a teacher that differs from the student
        for p in method.teacher.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    images = random_images(4)
    loss, _ = method.training_step(images, gen(3), 0, 10)

    # independent: replay the step's views and mask from the same generator state
    from core.augment.masks import block_mask

    g = gen(3)
    x = method.views(images, g)[0]
    mask = block_mask(len(x), method.backbone.grid, 0.5, g, x.device)
    teacher = method.teacher
    with torch.no_grad():
        h = torch.cat([teacher.cls_token.expand(len(x), -1, -1), teacher.patchify(x)], 1)
        outputs = []
        for block in teacher.blocks:
            h = block(h)
            outputs.append(h[:, 1:])
        target = layer_norm(sum(outputs[-3:]) / 3)[mask]  # raw blocks averaged, then one norm
        student = method.backbone.tokens(x, mask=mask, mask_token=method.mask_token)[:, 1:]
        pred = method.head(student[mask])
        dim = pred.shape[-1]
        expected = F.smooth_l1_loss(pred, target, beta=2.0, reduction="none").sum(-1).mean() / math.sqrt(dim)
    torch.testing.assert_close(loss.detach(), expected, rtol=1e-5, atol=1e-6)
    # and not the old per-block normalisation
    old = sum(layer_norm(o) for o in outputs[-3:])[mask] / 3
    assert not torch.allclose(old, target, atol=1e-3)


@pytest.mark.parametrize("step,frac,expected", [(0, 1.0, 0.9), (5, 1.0, 0.945), (2, 0.5, 0.936), (7, 0.5, 0.99)])
def test_data2vec_ema_anneals_linearly_over_a_fraction_of_training(step, frac, expected):
    method = build_method("data2vec", "vit_tiny", TINY_VIT, momentum=0.9, momentum_end=0.99,
                          momentum_anneal_frac=frac)
    with torch.no_grad():
        for p in method.backbone.parameters():
            p.add_(torch.randn_like(p))
    teacher_before = copy.deepcopy(method.teacher)
    method.after_step(step, 10)
    t0 = teacher_before.blocks[0].qkv.weight
    t1, s = method.teacher.blocks[0].qkv.weight, method.backbone.blocks[0].qkv.weight
    momentum = ((s - t1) / (s - t0)).mean().item()  # t1 = m t0 + (1 - m) s
    assert momentum == pytest.approx(expected, abs=1e-5)


# ---- DeepCluster-v2 ---------------------------------------------------------------------------


def test_image_keys_follow_the_image_not_its_position_in_the_batch():
    images = random_images(8)
    keys = image_keys(images)
    perm = torch.tensor([3, 0, 7, 1, 6, 2, 5, 4])
    assert torch.equal(image_keys(images[perm]), keys[perm])
    assert len(torch.unique(keys, dim=0)) == 8
    one_pixel = images.clone()
    one_pixel[0, 0, 5, 5] ^= 1
    assert not torch.equal(image_keys(one_pixel)[0], keys[0]) and torch.equal(image_keys(one_pixel)[1:], keys[1:])


def test_memory_bank_rewrites_an_image_in_its_own_slot_and_evicts_the_least_recent():
    bank = KeyedMemoryBank(size=6, views=1, dim=2)
    keys = image_keys(random_images(8))
    slots, new, evicted = bank.write(keys[:4], torch.ones(1, 4, 2), step=0)
    assert slots.tolist() == [0, 1, 2, 3] and new.all() and evicted == 0
    slots, new, evicted = bank.write(keys[[2, 4, 5]], torch.full((1, 3, 2), 2.0), step=1)
    assert slots.tolist() == [2, 4, 5] and new.tolist() == [False, True, True] and evicted == 0
    slots, new, evicted = bank.write(keys[[6, 7]], torch.full((1, 2, 2), 3.0), step=2)
    assert slots.tolist() == [0, 1] and evicted == 2  # images 0 and 1 were written longest ago
    assert bank.lookup(keys).tolist() == [-1, -1, 2, 3, 4, 5, 0, 1]
    assert bank.embeddings[0, :, 0].tolist() == [3.0, 3.0, 2.0, 1.0, 2.0, 2.0]


DC_OPTIONS = {"proj_hidden_dim": 16, "proj_dim": 8, "num_prototypes": 4, "num_heads": 2, "queue_size": 32}


def deepcluster():
    return build_method("deepcluster_v2", "small_cnn", {"width": 4}, **DC_OPTIONS)


def test_deepcluster_clusters_once_the_first_pass_is_over_and_labels_every_bank_entry():
    method = deepcluster()
    dataset = random_images(16)
    reclustered = []
    for step in range(3):  # batches of 8: images 0-7, 8-15, then 0-7 again (second epoch)
        batch = dataset[(step % 2) * 8:(step % 2) * 8 + 8]
        reclustered.append(method.training_step(batch, gen(step), step, 10)[1]["reclustered"])
    assert reclustered == [0.0, 0.0, 1.0]
    filled = method.memory.occupied()
    assert filled.sum() == 16
    for head in range(2):  # labels are the k-means labels of the bank of global crop head % 2
        bank = method.memory.embeddings[head % 2, filled]
        nearest = (bank @ method.centroids[head].T).argmax(1)
        assert torch.equal(method.labels[head, filled], nearest)
    # an image seen again kept its slot (insertion order: image i in slot i)
    assert method.memory.lookup(image_keys(dataset)).tolist() == list(range(16))


def test_deepcluster_target_of_an_image_is_the_label_of_its_own_bank_entry():
    method = deepcluster()
    dataset = random_images(16)
    for step in range(3):
        method.training_step(dataset[(step % 2) * 8:(step % 2) * 8 + 8], gen(step), step, 10)
    # labels no nearest-centroid rule would give: slot s (= image s) gets (3 s + h) mod K
    pattern = (3 * torch.arange(32)[None] + torch.arange(2)[:, None]) % 4
    method.labels.copy_(pattern)
    perm = torch.tensor([9, 2, 14, 5, 0, 11, 7, 3])
    batch = dataset[perm]

    reference = copy.deepcopy(method)  # the loss the step must compute, from those targets
    from core.methods.multicrop import forward_crops, split_crops
    from core.losses.deepcluster import deepcluster_loss

    global_crops, local_crops = split_crops(reference.views(batch, gen(5)))
    z = [F.normalize(e, dim=1) for e in forward_crops(
        lambda x: reference.projector(reference.backbone(x)), global_crops + local_crops)]
    expected = sum(deepcluster_loss([e @ c.T for e in z], pattern[h, perm], method.temperature)
                   for h, c in enumerate(reference.centroids)) / 2

    targets, own = method.assignments(method.memory.lookup(image_keys(batch)), torch.zeros(2, 8, 8))
    assert own.all() and torch.equal(targets, pattern[:, perm])
    loss, logs = method.training_step(batch, gen(5), 3, 10)
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-6)
    assert logs["own_label_fraction"] == 1.0


def test_deepcluster_images_unknown_to_the_bank_take_their_nearest_centroid(caplog):
    method = deepcluster()
    dataset = random_images(16)
    for step in range(3):
        method.training_step(dataset[(step % 2) * 8:(step % 2) * 8 + 8], gen(step), step, 10)
    strangers = random_images(8, seed=99)
    anchors = F.normalize(torch.randn(2, 8, 8, generator=gen(1)), dim=-1)
    targets, own = method.assignments(method.memory.lookup(image_keys(strangers)), anchors)
    assert not own.any()
    assert torch.equal(targets, (F.normalize(anchors.mean(0), dim=1) @ method.centroids.transpose(1, 2)).argmax(-1))
    with caplog.at_level(logging.WARNING):
        for step in range(3, 6):  # 24 new images into a 32-slot bank holding 16: evictions
            method.training_step(random_images(8, seed=100 + step), gen(step), step, 10)
    assert "queue_size" in caplog.text
    # the bank filled up at step 4; step 5 took over the slots of images 8-15 (last written at
    # step 1), which lose their old image's label; images 0-7 (rewritten at step 2) keep theirs
    assert (method.labels[:, 8:16] == -100).all() and (method.labels[:, :8] != -100).all()
    assert (method.memory.lookup(image_keys(dataset)) == -1).tolist() == [False] * 8 + [True] * 8


# ---- DINO -------------------------------------------------------------------------------------


def test_dino_head_has_no_batch_norm_truncated_normal_weights_and_zero_biases():
    from core.heads.dino import DINOHead
    from core.methods.dino import DINO

    params = inspect.signature(DINO.__init__).parameters
    assert params["head_batch_norm"].default is False and "freeze_last_layer_frac" not in params
    assert list(inspect.signature(DINOHead.forward).parameters) == ["self", "x"]
    torch.manual_seed(0)
    head = DINOHead(384, 2048, 256, 1000)
    assert not any(isinstance(m, torch.nn.BatchNorm1d) for m in head.modules())
    linears = [m for m in head.mlp if isinstance(m, torch.nn.Linear)]
    assert len(linears) == 3
    for linear in linears:
        assert linear.weight.std().item() == pytest.approx(0.02, rel=0.05)
        assert torch.count_nonzero(linear.bias) == 0
    names = [name for name, _ in head.named_parameters()]
    assert "last_layer.weight" in names


def test_tiny_dino_trains_stably_without_collapse():
    from core.data.builtin import digits
    from core.data.transforms import resize_images
    from core.methods.dino import teacher_temperature
    from core.train import Callbacks, TrainConfig, train

    images = resize_images(digits()[0].images, 16)[:512]
    method = build_method("dino", "vit_tiny", {"dim": 96, "depth": 2, "heads": 3, "patch_size": 4},
                          out_dim=256, proj_hidden_dim=256, bottleneck_dim=64)
    losses = []

    class Record(Callbacks):
        def on_log(self, step, logs):
            losses.append(logs["loss"])

    config = TrainConfig(steps=60, batch_size=32, optimizer="adamw", lr=5e-4, weight_decay=0.04, warmup_steps=10)
    result = train(method, images, config, callbacks=Record())
    assert result.reason == "completed" and all(math.isfinite(v) for v in losses)
    method.eval()
    with torch.no_grad():
        x = method.views.plain(images[:256])
        logits = method.teacher_head(method.teacher_backbone(x))
        temp = teacher_temperature(60, method.warmup_teacher_temp_steps, method.warmup_teacher_temp,
                                   method.teacher_temp)
        probs = F.softmax((logits - method.center) / temp, dim=-1)
    mean = probs.mean(0)
    entropy = -(mean * mean.clamp_min(1e-12).log()).sum().item()
    assert entropy > 2.0, f"teacher collapsed to a few dimensions: entropy {entropy:.3f} of max {math.log(256):.3f}"
    per_image = (probs - mean).abs().sum(-1).mean().item()  # mean total-variation distance x 2
    assert per_image > 0.05, f"teacher outputs are nearly identical across images ({per_image:.4f})"
    assert probs.argmax(1).unique().numel() > 1


# ---- ViT readout ------------------------------------------------------------------------------


@pytest.mark.parametrize("pool", ["cls", "mean"])
def test_vit_readout_is_the_documented_token_and_survives_a_checkpoint(pool, tmp_path):
    torch.manual_seed(0)
    model = build_backbone("vit_tiny", in_channels=1, image_size=16, pool=pool, **TINY_VIT).eval()
    assert model.config["pool"] == pool
    x = torch.randn(3, 1, 16, 16, generator=gen(1))
    with torch.no_grad():
        tokens = model.tokens(x)  # (B, 1 + N, dim) after the final norm, class token first
        expected = tokens[:, 0] if pool == "cls" else tokens[:, 1:].mean(1)
        features = model(x)
    assert features.shape == (3, 16)
    torch.testing.assert_close(features, expected)
    save_tree(tmp_path / "backbone.safetensors", model.state_dict(), manifest={"backbone": model.config})
    loaded, _ = load_backbone(tmp_path / "backbone.safetensors")
    assert loaded.pool == pool
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), features)


def test_vit_default_readout_is_cls_and_recorded_and_unknown_pools_are_refused():
    model = build_backbone("vit_tiny", in_channels=1, image_size=16, **TINY_VIT)
    assert model.pool == "cls" and model.config["pool"] == "cls"
    with torch.no_grad():
        x = torch.randn(2, 1, 16, 16, generator=gen(2))
        assert not torch.allclose(model(x), model.tokens(x)[:, 1:].mean(1))
    with pytest.raises(ValueError, match="pool"):
        build_backbone("vit_tiny", in_channels=1, image_size=16, pool="max", **TINY_VIT)
