"""An evaluate job inside the child: read its spec and dataset, then evaluate each source with the
dataset's modality's evaluation (workers/modalities.py)."""
from __future__ import annotations

from core.modalities import of_stats
from jobs.specs import EvaluateSpec
from jobs.tables import Dataset
from workers.context import JobContext, pick_device
from workers.modalities import EVALUATE


def run_evaluate(ctx: JobContext, raw_spec: dict):
    spec = EvaluateSpec.model_validate(raw_spec)
    device = pick_device(spec.device if spec.device != "auto" else ctx.settings.device)
    dataset_row = ctx.write(lambda s: s.get(Dataset, spec.dataset))
    return EVALUATE[of_stats(dataset_row.stats)](ctx, spec, dataset_row, device)
