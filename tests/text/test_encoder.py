"""The text encoder: padding never changes a text's features, the readouts, its size limits, and
its tokenizer travelling inside the backbone part of a checkpoint."""
from __future__ import annotations

import pytest
import torch

from core.backbones import build_backbone
from core.backbones.text import MAX_POSITIONS
from core.checkpoint import load_backbone, save_tree
from core.text.tokenizer import PAD


def encoder(pool: str = "mean", **options):
    torch.manual_seed(0)
    return build_backbone("text_tiny", vocab_size=500, max_length=32, pool=pool, **options).eval()


@pytest.mark.parametrize("pool", ["mean", "cls"])
def test_padding_does_not_change_features(tokenizer, pool):
    model = encoder(pool)
    model.set_tokenizer(tokenizer)
    alone = model.encode(["an animal"]).ids
    padded = model.encode(["an animal", "a long gloss about a domesticated animal that barks"]).ids[:1]
    assert padded.shape[1] > alone.shape[1] and (padded[0, alone.shape[1]:] == PAD).all()
    with torch.no_grad():
        assert torch.allclose(model(alone), model(padded), atol=1e-5)


def test_mean_readout_averages_the_non_padding_tokens(tokenizer):
    model = encoder("mean")
    ids = torch.tensor([[2, 10, 11, 3, 0, 0]])
    with torch.no_grad():
        tokens = model.tokens(ids)
        assert torch.allclose(model(ids), tokens[0, :4].mean(0, keepdim=True), atol=1e-6)
        assert torch.allclose(encoder("cls")(ids), encoder("cls").tokens(ids)[:, 0], atol=1e-6)


def test_size_limits_are_errors():
    with pytest.raises(ValueError, match=f"holds 3..{MAX_POSITIONS}"):
        build_backbone("text_tiny", vocab_size=500, max_length=MAX_POSITIONS + 1)
    with pytest.raises(ValueError, match="not divisible"):
        build_backbone("text_tiny", vocab_size=500, dim=100, heads=3)
    with pytest.raises(ValueError, match="at most 32"):
        encoder()(torch.ones(1, 33, dtype=torch.long))


def test_text_base_is_bert_base_sized():
    with torch.device("meta"):
        model = build_backbone("text_base", vocab_size=30522)
    n = sum(p.numel() for p in model.parameters())
    assert 105e6 < n < 115e6 and model.max_length == 512 and model.feature_dim == 768  # BERT-base: 110M


def test_tokenizer_travels_in_the_backbone_part(tokenizer, tmp_path):
    model = encoder()
    model.set_tokenizer(tokenizer)
    save_tree(tmp_path / "b.safetensors", model.state_dict(), {"backbone": model.config})
    loaded, _ = load_backbone(tmp_path / "b.safetensors")
    texts = ["a domestic animal", "to move on foot"]
    assert loaded.tokenizer.get_vocab() == tokenizer.get_vocab()
    assert loaded.tokenizer_fingerprint() == model.tokenizer_fingerprint()
    with torch.no_grad():
        assert torch.allclose(loaded(loaded.encode(texts).ids), model(model.encode(texts).ids), atol=1e-6)
    with pytest.raises(ValueError, match="no tokenizer"):
        encoder().encode(texts)
