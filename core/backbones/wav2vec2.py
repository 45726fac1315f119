"""The wav2vec 2.0 encoder (arXiv:2006.11477 sec. 2; fairseq's Wav2Vec2Model): a convolutional
feature encoder over the raw 16 kHz waveform (one frame per 20 ms), a projection with LayerNorm,
and a Transformer with a convolutional position embedding. Padding-aware throughout: a clip
padded with zeros gives the same frames as the clip alone (the first layer's group norm and
the pooling count only the clip's own frames; padded frames are zeroed before the position
convolution and never attended to)."""
from __future__ import annotations

import inspect

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from core.backbones.registry import register_backbone
from core.modalities import AUDIO
from core.data.audio import waveforms

# fairseq conv_feature_layers: [(512, 10, 5)] + [(512, 3, 2)] * 4 + [(512, 2, 2)] * 2 -> 320 samples a frame
KERNELS, STRIDES = (10, 3, 3, 3, 3, 2, 2), (5, 2, 2, 2, 2, 2, 2)
EXTRACTOR_MODES = ("default", "layer_norm")


class GradMultiply(torch.autograd.Function):
    """Identity forward; the gradient scaled by `scale` (fairseq's feature_grad_mult)."""

    @staticmethod
    def forward(ctx, x, scale):
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return grad * ctx.scale, None


def conv_lengths(lengths: Tensor, kernels=KERNELS, strides=STRIDES) -> Tensor:
    """Frames of the unpadded convolutions for `lengths` samples."""
    for k, s in zip(kernels, strides):
        lengths = torch.div(lengths - k, s, rounding_mode="floor").clamp_min(-1) + 1
    return lengths


class ConvFeatureEncoder(nn.Module):
    """Seven conv blocks (conv without padding, then GELU). "default" mode: a per-channel group
    norm after the first conv (fairseq Fp32GroupNorm(dim, dim)), statistics over the clip's own
    frames; "layer_norm" mode: a LayerNorm over channels after every conv (the large model)."""

    def __init__(self, channels: int = 512, mode: str = "default", bias: bool = False):
        super().__init__()
        if mode not in EXTRACTOR_MODES:
            raise ValueError(f"unknown extractor mode {mode!r}; choose one of {', '.join(EXTRACTOR_MODES)}")
        self.mode, self.channels = mode, channels
        self.convs = nn.ModuleList(nn.Conv1d(1 if i == 0 else channels, channels, k, s, bias=bias)
                                   for i, (k, s) in enumerate(zip(KERNELS, STRIDES)))
        for conv in self.convs:
            nn.init.kaiming_normal_(conv.weight)
        count = 1 if mode == "default" else len(KERNELS)
        self.norms = nn.ModuleList(nn.GroupNorm(channels, channels) if mode == "default" else nn.LayerNorm(channels)
                                   for _ in range(count))

    def forward(self, wave: Tensor, lengths: Tensor) -> Tensor:
        """wave: (B, T) float; lengths: (B,) samples of each clip. Returns (B, channels, frames)."""
        x = wave[:, None]
        for i, conv in enumerate(self.convs):
            x = conv(x)
            lengths = torch.div(lengths - conv.kernel_size[0], conv.stride[0], rounding_mode="floor").clamp_min(-1) + 1
            if self.mode == "default" and i == 0:
                x = self._group_norm(x, lengths)
            elif self.mode == "layer_norm":
                x = self.norms[i](x.transpose(1, 2)).transpose(1, 2)
            x = F.gelu(x)
        return x

    def _group_norm(self, x: Tensor, lengths: Tensor) -> Tensor:
        """GroupNorm(C, C) in float32 over each clip's own frames (nn.GroupNorm's result when
        nothing is padded)."""
        norm = self.norms[0]
        valid = (torch.arange(x.shape[-1], device=x.device)[None] < lengths[:, None]).float()[:, None]
        count = valid.sum(-1, keepdim=True).clamp_min(1)
        xf = x.float()
        mean = (xf * valid).sum(-1, keepdim=True) / count
        var = ((xf - mean).square() * valid).sum(-1, keepdim=True) / count
        out = (xf - mean) * torch.rsqrt(var + norm.eps) * norm.weight[:, None] + norm.bias[:, None]
        return out.to(x.dtype)


class EncoderLayer(nn.Module):
    """fairseq TransformerSentenceEncoderLayer: post-norm (base) or pre-norm (layer_norm_first, large)."""

    def __init__(self, dim: int, heads: int, ffn_dim: int, dropout: float, attention_dropout: float,
                 activation_dropout: float, layer_norm_first: bool):
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} is not divisible by heads {heads}")
        self.heads, self.attention_dropout, self.layer_norm_first = heads, attention_dropout, layer_norm_first
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out_proj = nn.Linear(dim, dim)
        self.attn_norm = nn.LayerNorm(dim)
        self.fc1, self.fc2 = nn.Linear(dim, ffn_dim), nn.Linear(ffn_dim, dim)
        self.final_norm = nn.LayerNorm(dim)
        self.drop, self.act_drop = nn.Dropout(dropout), nn.Dropout(activation_dropout)

    def attention(self, x: Tensor, keep: Tensor) -> Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=keep,
                                             dropout_p=self.attention_dropout if self.training else 0.0)
        return self.out_proj(out.transpose(1, 2).reshape(b, n, d))

    def forward(self, x: Tensor, keep: Tensor) -> Tensor:
        """x: (B, T, dim); keep: (B, 1, 1, T) bool, False at padding."""
        if self.layer_norm_first:
            x = x + self.drop(self.attention(self.attn_norm(x), keep))
            return x + self.drop(self.fc2(self.act_drop(F.gelu(self.fc1(self.final_norm(x))))))
        x = self.attn_norm(x + self.drop(self.attention(x, keep)))
        return self.final_norm(x + self.drop(self.fc2(self.act_drop(F.gelu(self.fc1(x))))))


class Wav2Vec2Encoder(nn.Module):
    """forward(audio) -> (B, dim): the Transformer's output frames averaged over each clip's own
    frames. `audio` is a padded int16 batch (core.data.audio.PAD marks the padding) or float
    waveforms in [-1, 1] with an optional padding mask."""

    def __init__(self, conv_channels: int = 512, extractor_mode: str = "default", conv_bias: bool = False,
                 dim: int = 768, depth: int = 12, heads: int = 12, ffn_dim: int = 3072, dropout: float = 0.1,
                 attention_dropout: float = 0.1, activation_dropout: float = 0.0, layerdrop: float = 0.0,
                 layer_norm_first: bool = False, conv_pos: int = 128, conv_pos_groups: int = 16,
                 dropout_input: float = 0.0, feature_grad_mult: float = 1.0):
        super().__init__()
        if dim % conv_pos_groups:
            raise ValueError(f"dim {dim} is not divisible by conv_pos_groups {conv_pos_groups}")
        self.feature_extractor = ConvFeatureEncoder(conv_channels, extractor_mode, conv_bias)
        self.feature_grad_mult, self.layerdrop, self.layer_norm_first = feature_grad_mult, layerdrop, layer_norm_first
        self.layer_norm = nn.LayerNorm(conv_channels)
        self.post_extract_proj = nn.Linear(conv_channels, dim) if conv_channels != dim else nn.Identity()
        self.dropout_input = nn.Dropout(dropout_input)
        pos_conv = nn.Conv1d(dim, dim, conv_pos, padding=conv_pos // 2, groups=conv_pos_groups)
        nn.init.normal_(pos_conv.weight, mean=0.0, std=(4 * (1.0 - dropout) / (conv_pos * dim)) ** 0.5)
        nn.init.zeros_(pos_conv.bias)
        self.pos_conv = nn.utils.parametrizations.weight_norm(pos_conv, name="weight", dim=2)
        self.encoder_norm = nn.LayerNorm(dim)
        self.drop = nn.Dropout(dropout)
        self.layers = nn.ModuleList(EncoderLayer(dim, heads, ffn_dim, dropout, attention_dropout, activation_dropout,
                                                 layer_norm_first) for _ in range(depth))
        for layer in self.layers:  # fairseq init_bert_params: N(0, 0.02) weights, zero biases
            for linear in (layer.qkv, layer.out_proj, layer.fc1, layer.fc2):
                nn.init.normal_(linear.weight, std=0.02)
                nn.init.zeros_(linear.bias)
        self.conv_channels, self.feature_dim = conv_channels, dim

    def extract(self, wave: Tensor, padding: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """(normed conv features (B, F, conv_channels), frame padding (B, F) bool, the L2
        penalty: mean square of the conv features over the clips' own frames)."""
        b, t = wave.shape
        lengths = (t - padding.sum(1)) if padding is not None else torch.full((b,), t, device=wave.device)
        features = self.feature_extractor(wave, lengths)
        if self.training and self.feature_grad_mult != 1.0:
            features = GradMultiply.apply(features, self.feature_grad_mult)
        frames = conv_lengths(lengths)
        frame_padding = torch.arange(features.shape[-1], device=wave.device)[None] >= frames[:, None]
        keep = (~frame_padding).float()
        penalty = (features.float().square().mean(1) * keep).sum() / keep.sum().clamp_min(1)
        return self.layer_norm(features.transpose(1, 2)), frame_padding, penalty

    def project(self, features: Tensor) -> Tensor:
        return self.dropout_input(self.post_extract_proj(features))

    def contextualize(self, x: Tensor, frame_padding: Tensor) -> Tensor:
        """The Transformer over (B, F, dim) frames; padded frames are zeroed first and never attended."""
        x = x.masked_fill(frame_padding[..., None], 0.0)
        position = self.pos_conv(x.transpose(1, 2))
        if self.pos_conv.kernel_size[0] % 2 == 0:  # fairseq SamePad: an even kernel gives one frame too many
            position = position[..., :-1]
        x = x + F.gelu(position).transpose(1, 2)
        if not self.layer_norm_first:
            x = self.encoder_norm(x)
        x = self.drop(x)
        keep = (~frame_padding)[:, None, None, :]
        for layer in self.layers:
            # LayerDrop (arXiv:1909.11556) from the CPU generator the loop seeds each step: no device sync
            if self.training and self.layerdrop > 0 and float(torch.rand(())) < self.layerdrop:
                continue
            x = layer(x, keep)
        return self.encoder_norm(x) if self.layer_norm_first else x

    def frames(self, audio: Tensor, padding: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """(context frames (B, F, dim), frame padding (B, F)) without masking."""
        if audio.dtype == torch.int16:
            audio, padding = waveforms(audio)
        features, frame_padding, _ = self.extract(audio, padding)
        return self.contextualize(self.project(features), frame_padding), frame_padding

    def forward(self, audio: Tensor, padding: Tensor | None = None) -> Tensor:
        x, frame_padding = self.frames(audio, padding)
        keep = (~frame_padding).to(x.dtype)[..., None]
        return (x * keep).sum(1) / keep.sum(1).clamp_min(1)


# base: fairseq Wav2Vec2Config defaults; large: wav2vec2_large_librivox.yaml; small: ours, for a CPU
SIZES = {
    "wav2vec2_small": dict(conv_channels=64, dim=128, depth=2, heads=2, ffn_dim=512, conv_pos=32, conv_pos_groups=8),
    "wav2vec2_base": dict(conv_channels=512, dim=768, depth=12, heads=12, ffn_dim=3072),
    "wav2vec2_large": dict(conv_channels=512, dim=1024, depth=24, heads=16, ffn_dim=4096, extractor_mode="layer_norm",
                           conv_bias=True, layer_norm_first=True),
}


def _audio_backbone(size: dict):
    def build(in_channels: int = 1, image_size: int = 0, **options) -> Wav2Vec2Encoder:
        # in_channels / image_size are the image backbones' arguments; a waveform encoder has none
        return Wav2Vec2Encoder(**{**size, **options})

    # the encoder's own options with this size's defaults, so that core.backbones.sizes.check_options
    # knows them (names, types and bounds) before anything is built
    options = [p.replace(default=size.get(p.name, p.default))
               for p in inspect.signature(Wav2Vec2Encoder).parameters.values()]
    build.__signature__ = inspect.Signature([*list(inspect.signature(build).parameters.values())[:2], *options])
    return build


for _name, _size in SIZES.items():
    register_backbone(_name, AUDIO)(_audio_backbone(_size))
