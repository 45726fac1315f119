"""ONNX export of a downstream encoder: raw pixels in, the embedding endpoint's vectors out.

The exported graph takes `pixels`, float32 (N, C, H, W) in 0..255 as the embedding endpoint
receives them after decoding and resizing, applies the checkpoint's normalisation, and runs the
backbone in eval mode, so onnxruntime gives what `POST /v1/embeddings` gives. The checkpoint's
manifest travels in the model's metadata (`darkmatter.manifest`)."""
from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path

import torch
from torch import Tensor, nn

from core.checkpoint import write_atomic
from core.modalities import IMAGE, of_manifest

log = logging.getLogger(__name__)
OPSET = 18
INPUT_NAME, OUTPUT_NAME = "pixels", "embedding"
MANIFEST_KEY = "darkmatter.manifest"


class PixelEncoder(nn.Module):
    """backbone((pixels / 255 - mean) / std): the endpoint's preprocessing inside the graph."""

    def __init__(self, backbone: nn.Module, mean: list[float], std: list[float]):
        super().__init__()
        self.backbone = backbone
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, pixels: Tensor) -> Tensor:
        return self.backbone((pixels / 255 - self.mean) / self.std).float()


def onnx_bytes(backbone: nn.Module, manifest: dict, opset: int = OPSET) -> bytes:
    """The serialised ONNX model of a backbone and its manifest (normalisation, input_size)."""
    import onnx

    modality = of_manifest(manifest)
    if modality != IMAGE:  # a text model's input is strings (and word vectors are a table)
        raise ValueError(f"ONNX export takes image encoders; a {modality} checkpoint downloads as safetensors")
    channels, height, width = manifest["input_size"]
    norm = manifest["normalization"]
    model = PixelEncoder(backbone, norm["mean"], norm["std"]).eval()
    example = torch.zeros(2, channels, height, width)
    batch = torch.export.Dim("batch", min=1, max=65536)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's notes on its own internals are not the user's business
        program = torch.onnx.export(model, (example,), None, input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                                    dynamic_shapes={"pixels": {0: batch}}, opset_version=opset, dynamo=True,
                                    external_data=False, verbose=False)
    proto = program.model_proto
    onnx.helper.set_model_props(proto, {MANIFEST_KEY: json.dumps(manifest, sort_keys=True)})
    onnx.checker.check_model(proto)
    return proto.SerializeToString()


def export_onnx(backbone: nn.Module, manifest: dict, path: str | Path, opset: int = OPSET) -> int:
    """Write the ONNX model atomically to `path`; returns its size in bytes."""
    data = onnx_bytes(backbone, manifest, opset)
    write_atomic(path, data)
    log.info("exported %s (%d bytes) to %s", manifest.get("backbone", {}).get("name"), len(data), path)
    return len(data)
