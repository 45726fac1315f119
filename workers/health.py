"""Representation health during pretraining: every `health_every` steps the downstream encoder
embeds a fixed probe batch; the statistics are logged as metrics (health/...), and a collapse
(core.evaluate.health.collapse_reason) writes a `collapse` job event and, with
stop_on_collapse, stops the job."""
from __future__ import annotations

import torch

from core.evaluate.features import extract_features
from core.evaluate.health import collapse_reason, health_stats
from workers.context import JobContext

PROBE_ITEMS = 512


class HealthMonitor:
    def __init__(self, ctx: JobContext, method, images, mean, std, device, every: int, stop: bool, total: int):
        self.ctx, self.method, self.mean, self.std, self.device = ctx, method, mean, std, device
        self.every, self.stop, self.total = every, stop, total
        gen = torch.Generator().manual_seed(0)
        self.probe = images[torch.randperm(len(images), generator=gen)[:PROBE_ITEMS]] if every else None
        self.reported = False

    def check(self, step: int) -> str | None:
        """'collapsed' when the job should stop, else None; logs the statistics at due steps."""
        if not self.every or step == 0 or step % self.every:
            return None
        encoder = self.method.downstream_encoder()
        was_training = encoder.training
        try:
            z = extract_features(encoder, self.probe, self.mean, self.std, device=self.device)
        finally:
            encoder.train(was_training)
        stats = health_stats(z)
        self.ctx.log_metrics(step, {f"health/{k}": v for k, v in stats.items()}, self.total)
        reason = collapse_reason(stats, z.shape[1])
        if reason is None:
            return None
        if not self.reported:
            self.ctx.event("collapse", f"representation collapse at step {step}: {reason}", step=step,
                           **{k: round(v, 6) for k, v in stats.items()})
            self.reported = True
        return "collapsed" if self.stop else None
