"""No training step waits for the device: every image method's training_step and after_step run
without a host read (a CPU stand-in for torch.cuda.set_sync_debug_mode, tests/core/host_sync.py),
the multi-tensor LARS, per-parameter clipping and EMA equal their per-parameter loops, and the
fixed-shape rewrites keep each method's losses."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from core.methods import method_info, method_names
from core.methods.momentum import applied_only, ema_update
from core.augment.masks import complement
from core.optim import LARS
from core.train import TrainConfig, clip_gradients
from tests.core.host_sync import HostSyncs
from tests.core.tiny import build_tiny, digits_16

IMAGE_METHODS = [n for n in method_names() if method_info(n).modality == "image"]


@pytest.fixture(scope="module")
def images():
    return digits_16(64)[0]


def steps_syncs(method, images, steps, **step_args):
    found = []
    for step in steps:
        gen = torch.Generator().manual_seed(step)
        with HostSyncs() as syncs:
            loss, extra = method.training_step(images[:32], gen, step, 100, **step_args)
            loss.backward()
            method.after_step(step, 100)
        found += syncs.found
        assert all(isinstance(v, (torch.Tensor, float, int)) for v in extra.values())
    return found


@pytest.mark.parametrize("name", IMAGE_METHODS)
def test_training_step_never_reads_the_device(name, images):
    method = build_tiny(name)
    if name == "swav":
        method.queue_start_steps = 0  # the queue fills and joins within the steps
    kwargs = {}
    if name == "deepcluster_v2":  # the loop's path: dataset indices, k-means only at an epoch start
        method.cluster_every_steps = 100
        kwargs = {"indices": torch.arange(32)}
    found = steps_syncs(method, images, range(6), **kwargs)
    assert not found, f"{name}: {found[0][0]} at\n{found[0][1]}"


def test_deepcluster_without_indices_reads_only_whether_kmeans_is_due(images):
    """Streamed data (no dataset indices): one read a step, the clustering flag and the eviction
    count together in one transfer (k-means itself is the host's decision)."""
    found = steps_syncs(build_tiny("deepcluster_v2"), images, range(1))
    assert [op for op, _ in found] == ["tolist"] and "clustering_due" in found[0][1]


def test_host_sync_detector_sees_the_usual_reads():
    x = torch.arange(6.0)
    for read in (lambda: x.sum().item(), lambda: bool(x.any()), lambda: x.nonzero(), lambda: x[x > 2],
                 lambda: x.tolist(), lambda: torch.unique(x), lambda: int(x.max()), lambda: x.numpy()):
        with HostSyncs() as syncs:
            read()
        assert syncs.found


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA: torch.cuda.set_sync_debug_mode")
@pytest.mark.parametrize("name", IMAGE_METHODS)
def test_training_step_never_syncs_on_cuda(name, images):
    method = build_tiny(name).cuda()
    kwargs = {"indices": torch.arange(32, device="cuda")} if name == "deepcluster_v2" else {}
    if name == "deepcluster_v2":
        method.cluster_every_steps = 100
    batch = images[:32].cuda()
    for step in range(3):
        gen = torch.Generator(device="cuda").manual_seed(step)
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            loss, _ = method.training_step(batch, gen, step, 100, **kwargs)
            loss.backward()
            method.after_step(step, 100)
        finally:
            torch.cuda.set_sync_debug_mode(0)


# ---- fixed-shape rewrites keep the losses -----------------------------------------------------

# Losses of 4 SGD steps (6 for SwAV, whose 128-row queue is full from step 4) computed with the
# code before the rewrite (boolean-mask indexing, nonzero, bool(queue.any()), unique): float32,
# compared to 1e-6 relative. I-JEPA's masks are now drawn on the host from their own stream, so
# its numbers are new ones (a regression pin), not the old code's.
EXPECTED = {
    "mae": [2.1653621, 1.2774997, 1.0908326, 0.9995368],
    "swav": [4.9573479, 4.5973072, 4.1897736, 4.2456779, 4.1349468, 3.7690144],
    "data2vec": [1.6623912, 1.0819923, 0.8214403, 0.6853632],
    "deepcluster_v2": [3.4657362, 3.4657362, 3.4657362, 5.443356],
    "ijepa": [0.6119709, 0.5075033, 0.428445, 0.3757336],
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_fixed_shape_rewrites_keep_the_losses(name, images):
    torch.manual_seed(0)
    method = build_tiny(name)
    if name == "swav":
        method.queue_start_steps, method.freeze_prototypes_steps = 0, 1
    optimizer = torch.optim.SGD([p for p in method.parameters() if p.requires_grad], lr=0.05)
    losses = []
    for step in range(len(EXPECTED[name])):
        gen = torch.Generator().manual_seed(100 + step)
        rows = slice(32 * (step % 2), 32 * (step % 2) + 32)
        kwargs = {"indices": torch.arange(64)[rows]} if name == "deepcluster_v2" and step >= 2 else {}
        loss, _ = method.training_step(images[rows], gen, step, 8, **kwargs)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        method.after_step(step, 8)
        losses.append(loss.item())
    assert losses == pytest.approx(EXPECTED[name], rel=1e-6, abs=1e-7)


def test_complement_is_the_sorted_complement():
    keep = torch.rand(5, 16).argsort(1)[:, :4].sort(1).values
    hidden = complement(keep, 16)
    for k, h in zip(keep.tolist(), hidden.tolist()):
        assert h == sorted(set(range(16)) - set(k))


# ---- multi-tensor optimiser pieces against the loops they replace ----------------------------


def lars_loop(params, lr, momentum, wd, eta, clip_lr, exclude, eps, state):
    """The per-parameter LARS step this file's optimiser had before (and solo-learn's)."""
    with torch.no_grad():
        for p in params:
            grad = p.grad
            if p.ndim > 1 or not exclude:
                p_norm, g_norm = torch.norm(p), torch.norm(grad)
                trust = eta * p_norm / (g_norm + wd * p_norm + eps)
                if clip_lr:
                    trust = torch.clamp(trust / lr, max=1.0)
                trust = torch.where((p_norm > 0) & (g_norm > 0), trust, torch.ones_like(trust))
                grad = grad.add(p, alpha=wd).mul(trust)
            buf = state.get(p)
            if buf is None:
                buf = state[p] = grad.clone()
            else:
                buf.mul_(momentum).add_(grad)
            p.add_(buf, alpha=-lr)


def world(seed):
    gen = torch.Generator().manual_seed(seed)
    shapes = [(8, 5), (3, 4, 2, 2), (5,), (7,), (6, 6)]
    params = [nn.Parameter(torch.randn(s, generator=gen)) for s in shapes]
    params[3].data.zero_()  # a zero parameter: trust 1
    grads = [[torch.randn(s, generator=gen) * 10 ** (i % 3 - 1) for i, s in enumerate(shapes)] for _ in range(3)]
    return params, grads


@pytest.mark.parametrize("clip_lr,exclude", [(True, True), (False, False), (True, False)])
def test_foreach_lars_equals_the_loop(clip_lr, exclude):
    params, grads = world(0)
    ours = [nn.Parameter(p.detach().clone()) for p in params]
    optimizer = LARS(ours, lr=0.3, momentum=0.9, weight_decay=1e-4, eta=0.02, clip_lr=clip_lr,
                     exclude_bias_n_norm=exclude)
    state = {}
    for step_grads in grads:
        for p, q, g in zip(params, ours, step_grads):
            p.grad, q.grad = g.clone(), g.clone()
        lars_loop(params, 0.3, 0.9, 1e-4, 0.02, clip_lr, exclude, 1e-8, state)
        optimizer.step()
    for p, q in zip(params, ours):
        torch.testing.assert_close(q, p, rtol=0, atol=1e-7)


def test_foreach_per_parameter_clipping_equals_the_loop():
    model = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3))
    gen = torch.Generator().manual_seed(1)
    for i, p in enumerate(model.parameters()):
        p.grad = torch.randn(p.shape, generator=gen) * (0.01 if i == 1 else 5.0)  # one below the threshold
    expected = []
    for p in model.parameters():
        g = p.grad.clone()
        coef = torch.clamp(1.0 / (g.norm() + 1e-6), max=1.0)
        expected.append(g * coef)
    reference = [p.grad.clone() for p in model.parameters()]
    loop = [nn.Parameter(torch.zeros_like(g)) for g in reference]
    for p, g in zip(loop, reference):
        p.grad = g.clone()
        torch.nn.utils.clip_grad_norm_([p], 1.0)  # DINO's clip_gradients, parameter by parameter
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    clip_gradients(model, optimizer, scaler, TrainConfig(steps=1, grad_clip=1.0, grad_clip_mode="per_parameter"))
    for p, q, e in zip(model.parameters(), loop, expected):
        torch.testing.assert_close(p.grad, q.grad, rtol=0, atol=1e-7)
        torch.testing.assert_close(p.grad, e, rtol=0, atol=1e-7)


def test_foreach_ema_equals_the_loop_and_a_skipped_step_leaves_the_target():
    online, target = nn.Linear(7, 4), nn.Linear(7, 4)
    reference = [p.detach().clone() for p in target.parameters()]
    for r, o in zip(reference, online.parameters()):
        r.mul_(0.99).add_(o.detach(), alpha=0.01)  # target <- m target + (1 - m) online, per parameter
    ema_update(target, online, 0.99)
    for p, r in zip(target.parameters(), reference):
        torch.testing.assert_close(p, r, rtol=0, atol=1e-7)
    after = [p.detach().clone() for p in target.parameters()]
    with applied_only(torch.tensor(0.0)):
        ema_update(target, online, 0.99)
    assert all(torch.equal(p, a) for p, a in zip(target.parameters(), after))
    with applied_only(torch.tensor(1.0)):
        ema_update(target, online, 0.99)
    assert not all(torch.equal(p, a) for p, a in zip(target.parameters(), after))
