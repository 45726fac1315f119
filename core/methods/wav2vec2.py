"""wav2vec 2.0 (Baevski et al., 2020, arXiv:2006.11477): mask spans of the conv features, contextualise
them with a Transformer, and pick each masked frame's quantized latent among K distractors from
the same utterance; plus the codebook diversity loss and an L2 penalty on the conv features.
Batches are padded int16 clips (core.data.audio: PAD marks the padding)."""
from __future__ import annotations

import torch
from torch import nn

from core.augment.spans import sample_distractors, span_mask
from core.data.audio import waveforms
from core.heads.quantizer import GumbelQuantizer, gumbel_temperature
from core.losses.wav2vec2 import contrastive_loss, diversity_loss
from core.methods.base import Method
from core.methods.registry import build_viewless, register
from core.methods.recipe import Recipe

PAPER = "wav2vec 2.0 (arXiv:2006.11477) sec. 4.2"
BASE_YAML = "fairseq examples/wav2vec/config/pretraining/wav2vec2_base_librispeech.yaml"
LARGE_YAML = "fairseq examples/wav2vec/config/pretraining/wav2vec2_large_librivox.yaml"
MODEL = "fairseq models/wav2vec/wav2vec2.py Wav2Vec2Config defaults"
# LibriSpeech 960 h: 400k updates of 64 GPUs x 1.4M samples (1.6 h of audio) are about 670 passes; 8 % warm-up
BASE_EPOCHS = 670
METHOD_SOURCES = f"{MODEL} (mask_prob 0.65, mask_length 10, num_negatives 100, logit_temp 0.1, latent_vars 320, " \
                 "latent_groups 2); loss_weights [0.1, 10] of the yaml"
NOTES = ("The loop's AdamW (eps 1e-8, no decay on biases and norms) and cosine decay stand in for fairseq's Adam "
         "(eps 1e-6, decoupled decay on every weight) and linear (polynomial power 1) decay. Batches are padded "
         "clips with masks instead of crops to the batch's shortest clip; batch_size counts clips.")

RECIPES = {
    "small": Recipe(
        backbone="wav2vec2_small", backbone_options={"dropout": 0.1, "layerdrop": 0.05, "dropout_input": 0.1,
                                                     "feature_grad_mult": 0.1},
        optimizer="adamw", base_lr=1e-3, lr_scaling="none", batch_size=32, epochs=100, warmup_epochs=8,
        weight_decay=0.01, betas=(0.9, 0.98),
        method_options={"final_dim": 128, "mask_prob": 0.65, "mask_length": 10, "num_negatives": 100,
                        "logit_temp": 0.1, "codebook_groups": 2, "codebook_entries": 320, "diversity_weight": 0.1,
                        "penalty_weight": 10.0, "max_temp": 2.0, "min_temp": 0.5, "temp_decay": 0.999995,
                        "dropout_features": 0.1},
        sources={"backbone": "ours for a CPU: the base model's conv strides and kernels with 64 channels, a "
                             "2-layer 128-wide Transformer, position conv kernel 32 (1 s clips are 49 frames)",
                 "backbone_options": f"{BASE_YAML} (dropout 0.1, encoder_layerdrop 0.05, dropout_input 0.1, "
                                     "feature_grad_mult 0.1)",
                 "optimizer": f"{BASE_YAML} (adam, betas 0.9/0.98, weight_decay 0.01)",
                 "base_lr": "2x the base model's 5e-4: a small model on a short schedule",
                 "warmup_epochs": f"{PAPER} (8 % of the updates)", "method_options": METHOD_SOURCES},
        notes="Sized for a CPU and ~1,000 one-second clips (spoken-words). " + NOTES),
    "base": Recipe(
        backbone="wav2vec2_base", backbone_options={"dropout": 0.1, "layerdrop": 0.05, "dropout_input": 0.1,
                                                    "feature_grad_mult": 0.1},
        optimizer="adamw", base_lr=5e-4, lr_scaling="none", batch_size=64, epochs=BASE_EPOCHS,
        warmup_epochs=0.08 * BASE_EPOCHS, weight_decay=0.01, betas=(0.9, 0.98),
        method_options={"final_dim": 256, "mask_prob": 0.65, "mask_length": 10, "num_negatives": 100,
                        "logit_temp": 0.1, "codebook_groups": 2, "codebook_entries": 320, "diversity_weight": 0.1,
                        "penalty_weight": 10.0, "max_temp": 2.0, "min_temp": 0.5, "temp_decay": 0.999995,
                        "dropout_features": 0.1},
        sources={"backbone": f"{MODEL} (12 layers, 768 wide, 3072 FFN, 12 heads, conv_pos 128 / 16 groups, "
                             "extractor_mode default, conv_bias false)",
                 "backbone_options": f"{BASE_YAML} (dropout 0.1, encoder_layerdrop 0.05, dropout_input 0.1, "
                                     "feature_grad_mult 0.1)",
                 "optimizer": f"{BASE_YAML} (adam, betas 0.9/0.98, eps 1e-6, weight_decay 0.01)",
                 "base_lr": f"{BASE_YAML} (lr 5e-4); {PAPER}", "batch_size": f"64 clips here; {PAPER}: 1.4M "
                 "samples per GPU on 64 GPUs", "epochs": f"{BASE_YAML} (max_update 400k, about 670 epochs of 960 h)",
                 "warmup_epochs": f"{BASE_YAML} (warmup_updates 32k of 400k = 8 %)",
                 "method_options": f"{METHOD_SOURCES}; final_dim 256, dropout_features 0.1 of the yaml"},
        notes="One accelerator: 64 clips a batch instead of 1.6 h of audio. " + NOTES),
    "large": Recipe(
        backbone="wav2vec2_large", backbone_options={"dropout": 0.0, "attention_dropout": 0.0, "layerdrop": 0.0,
                                                     "dropout_input": 0.0, "feature_grad_mult": 1.0},
        optimizer="adamw", base_lr=3e-4, lr_scaling="none", batch_size=64, epochs=BASE_EPOCHS,
        warmup_epochs=0.08 * BASE_EPOCHS, weight_decay=0.01, betas=(0.9, 0.98),
        method_options={"final_dim": 768, "mask_prob": 0.65, "mask_length": 10, "num_negatives": 100,
                        "logit_temp": 0.1, "codebook_groups": 2, "codebook_entries": 320, "diversity_weight": 0.1,
                        "penalty_weight": 0.0, "max_temp": 2.0, "min_temp": 0.1, "temp_decay": 0.999995,
                        "dropout_features": 0.0},
        sources={"backbone": f"{LARGE_YAML} (24 layers, 1024 wide, 4096 FFN, 16 heads, extractor_mode layer_norm, "
                             "layer_norm_first, conv_bias)",
                 "backbone_options": f"{LARGE_YAML} (dropout 0, attention_dropout 0, encoder_layerdrop 0, "
                                     "dropout_input 0, feature_grad_mult 1.0)",
                 "optimizer": f"{LARGE_YAML} (adam, betas 0.9/0.98, eps 1e-6, weight_decay 0.01)",
                 "base_lr": f"{PAPER} (peak 3e-4 for LARGE; the yaml says 0.005)",
                 "warmup_epochs": f"{PAPER} (8 % of the updates)",
                 "method_options": f"{METHOD_SOURCES}; {LARGE_YAML}: final_dim 768, latent_temp (2, 0.1, "
                                   "0.999995), loss_weights [0.1, 0]"},
        notes="Epochs as the base recipe (the paper's LARGE runs 250k updates on LS-960, 600k on LV-60k). " + NOTES),
}


@register("wav2vec2", family="masked-prediction", recipes=RECIPES, modality="audio", paper="arXiv:2006.11477")
class Wav2Vec2(Method):
    def __init__(self, backbone, views=None, final_dim: int = 256, mask_prob: float = 0.65, mask_length: int = 10,
                 num_negatives: int = 100, logit_temp: float = 0.1, codebook_groups: int = 2,
                 codebook_entries: int = 320, diversity_weight: float = 0.1, penalty_weight: float = 10.0,
                 max_temp: float = 2.0, min_temp: float = 0.5, temp_decay: float = 0.999995,
                 dropout_features: float = 0.1):
        super().__init__(backbone, views)
        if not hasattr(backbone, "extract"):
            raise ValueError("wav2vec2 needs a wav2vec2 backbone (wav2vec2_small, wav2vec2_base, wav2vec2_large)")
        if not 0 < mask_prob <= 1 or mask_length < 1 or num_negatives < 1:
            raise ValueError("mask_prob must be in (0, 1], mask_length and num_negatives at least 1")
        self.mask_prob, self.mask_length, self.num_negatives = mask_prob, mask_length, num_negatives
        self.logit_temp, self.diversity_weight, self.penalty_weight = logit_temp, diversity_weight, penalty_weight
        self.temperatures = (max_temp, min_temp, temp_decay)
        self.unused_parameters = backbone.layerdrop > 0  # a dropped layer gets no gradient that step
        dim = backbone.feature_dim
        self.mask_embedding = nn.Parameter(torch.empty(dim).uniform_())
        self.dropout_features = nn.Dropout(dropout_features)
        self.quantizer = GumbelQuantizer(backbone.conv_channels, final_dim, codebook_groups, codebook_entries)
        self.project_q = nn.Linear(final_dim, final_dim)
        self.final_proj = nn.Linear(dim, final_dim)

    def training_step(self, batch, gen, step, total_steps):
        wave, padding = waveforms(batch)
        features, frame_padding, penalty = self.backbone.extract(wave, padding)
        x = self.backbone.project(features)
        mask = span_mask(~frame_padding, self.mask_prob, self.mask_length, gen)
        x = torch.where(mask[..., None], self.mask_embedding.to(x.dtype), x)
        context = self.final_proj(self.backbone.contextualize(x, frame_padding))
        temperature = gumbel_temperature(step, *self.temperatures)
        q = self.quantizer(self.dropout_features(features), temperature, gen, weights=mask)
        targets = self.project_q(q["quantized"])
        distractors = sample_distractors(mask, self.num_negatives, gen)
        codes = q["codes"]
        same = (codes.gather(1, distractors.flatten(1)[..., None].expand(-1, -1, codes.shape[-1]))
                .view(*distractors.shape, -1) == codes[:, :, None]).all(-1)  # equal codes: equal targets
        contrastive = contrastive_loss(context, targets, mask, distractors, self.logit_temp, invalid=same)
        diversity = diversity_loss(q["avg_probs"])
        loss = contrastive + self.diversity_weight * diversity + self.penalty_weight * penalty
        logs = {"contrastive": contrastive.detach(), "diversity": diversity.detach(), "feature_penalty": penalty.detach(),
                "prob_perplexity": q["prob_perplexity"].detach(), "code_perplexity": q["code_perplexity"],
                "gumbel_temperature": temperature}
        return loss, logs

    def parts(self):
        heads = nn.ModuleDict({"quantizer": self.quantizer, "project_q": self.project_q,
                               "final_proj": self.final_proj})
        return {"backbone": self.backbone, "heads": heads}


def build_audio(recipe: dict) -> Wav2Vec2:
    """An audio method from its resolved recipe (core.recipes.resolve); no views."""
    return build_viewless(recipe)
