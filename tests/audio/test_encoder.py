"""The wav2vec 2.0 encoder: padding invariance, the first layer's norm, frame counts."""
from __future__ import annotations

import torch

from core.backbones import build_backbone
from core.backbones.wav2vec2 import ConvFeatureEncoder, conv_lengths
from core.data.audio import PAD
from tests.audio.tiny import TINY


def test_a_zero_padded_clip_with_its_mask_pools_to_the_same_features_as_the_clip_alone():
    torch.manual_seed(0)
    encoder = build_backbone("wav2vec2_small", **TINY).eval()
    clip = (torch.randn(5000) * 8000).round().clamp(-32767, 32767).to(torch.int16)
    alone = encoder(clip[None])
    batch = torch.full((2, 9000), PAD, dtype=torch.int16)
    batch[0, :5000] = clip
    batch[1] = (torch.randn(9000) * 8000).round().clamp(-32767, 32767).to(torch.int16)
    together = encoder(batch)
    assert torch.allclose(together[0], alone[0], atol=1e-5)
    wave = batch[:1].float() / 32768
    wave[:, 5000:] = 0
    padding = torch.arange(9000)[None] >= 5000
    assert torch.allclose(encoder(wave, padding)[0], alone[0], atol=1e-5)


def test_first_layer_norm_is_groupnorm_over_the_clip_frames():
    torch.manual_seed(1)
    encoder = ConvFeatureEncoder(8, "default")
    x = torch.randn(3, 400)
    conv = encoder.convs[0](x[:, None])
    ours = encoder._group_norm(conv, torch.full((3,), 400))
    assert torch.allclose(ours, encoder.norms[0](conv), atol=1e-5)


def test_frames_are_twenty_milliseconds():
    assert conv_lengths(torch.tensor([16000, 400, 399])).tolist() == [49, 1, 0]
    assert conv_lengths(torch.tensor([250_000])).item() == 781  # (250000 - 400) // 320 + 1
