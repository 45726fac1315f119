"""A pretrain job inside the child: read its spec and dataset, then train with its modality's
trainer (workers/modalities.py)."""
from __future__ import annotations

from jobs.specs import PretrainSpec
from jobs.tables import Dataset
from workers.context import JobContext, pick_device
from workers.modalities import PRETRAIN, trainer


def run_pretrain(ctx: JobContext, raw_spec: dict):
    spec = PretrainSpec.model_validate(raw_spec)
    device = pick_device(spec.device if spec.device != "auto" else ctx.settings.device)
    dataset_row = ctx.write(lambda s: s.get(Dataset, spec.dataset))
    return PRETRAIN[trainer(dataset_row, spec.method)](ctx, spec, raw_spec, dataset_row, device)
