"""ONNX export: onnxruntime gives the backbone's eval-mode features of the normalised pixels."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from core.augment import normalize
from core.backbones import build_backbone
from core.export import INPUT_NAME, MANIFEST_KEY, export_onnx

ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

# small_cnn and the endpoint's view of all three are in tests/api/test_onnx_download.py
BACKBONES = {
    "resnet18": ({}, 3, 16),
    "vit_tiny-mean": ({"dim": 48, "depth": 2, "heads": 3, "pool": "mean"}, 3, 16),
    "regnet_y-tiny": ({"depth": 4, "w_0": 8, "w_a": 8.0, "w_m": 2.0, "group_width": 8}, 1, 16),  # SE blocks, grouped convs
}


def trained_looking(name: str, options: dict, channels: int, size: int) -> torch.nn.Module:
    """A backbone whose BatchNorm running statistics are not the identity, so train-mode and
    eval-mode outputs differ and the export must use the eval ones."""
    torch.manual_seed(0)
    model = build_backbone(name.split("-")[0], in_channels=channels, image_size=size, **options)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    return model.eval()


@pytest.mark.parametrize("name", list(BACKBONES))
def test_onnx_encoder_matches_the_backbone_within_1e_4(name, tmp_path, one_thread):
    options, channels, size = BACKBONES[name]
    model = trained_looking(name, options, channels, size)
    mean, std = [0.45] * channels, [0.25] * channels
    manifest = {"backbone": model.config, "feature_dim": model.feature_dim, "input_size": [channels, size, size],
                "normalization": {"mean": mean, "std": std}}
    path = tmp_path / "encoder.onnx"
    assert export_onnx(model, manifest, path) == path.stat().st_size

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    generator = torch.Generator().manual_seed(1)
    for batch in (1, 5):  # the batch axis is dynamic
        pixels = torch.randint(0, 256, (batch, channels, size, size), generator=generator).float()
        with torch.no_grad():
            expected = model(normalize(pixels / 255, mean, std)).numpy()
        (actual,) = session.run(None, {INPUT_NAME: pixels.numpy()})
        assert actual.shape == (batch, model.feature_dim)
        assert np.abs(actual - expected).max() < 1e-4
    stored = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert json.loads(stored[MANIFEST_KEY])["backbone"] == model.config
