"""SwAV (Caron et al., 2020, arXiv:2006.09882): online clustering by swapped assignments.

Each global crop's prototype scores are turned into balanced codes by Sinkhorn-Knopp; every
other crop (multi-crop: 2 global + small local ones) predicts those codes. For small batches a
queue of past global-crop embeddings joins the Sinkhorn step once it is full; it starts after
`queue_start_frac` of training (epoch 15 of 800 in the paper). Prototypes are kept unit-norm
after every step and get no gradient during the first `freeze_prototypes_frac` of training
(the paper's first epoch)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from core.augment import CropSpec, ViewConfig
from core.heads import mlp
from core.heads.prototypes import Prototypes
from core.losses.swav import prototype_scores, sinkhorn, swav_loss
from core.methods.base import Method
from core.methods.multicrop import embed_crops, global_crop_count, split_crops
from core.methods.registry import register
from core.recipes import Recipe

# 2x224 crops of scale (0.14, 1) and 6x96 of scale (0.05, 0.14); colour jitter strength 0.8.
SWAV_VIEWS = ViewConfig(
    crops=[CropSpec(count=2, size=1.0, scale=(0.14, 1.0), blur_p=0.5),
           CropSpec(count=6, size=0.5, scale=(0.05, 0.14), blur_p=0.5)],
    brightness=0.8, contrast=0.8, saturation=0.8, hue=0.2,
)


SOLO = "solo-learn scripts/pretrain/cifar/swav"
RECIPES = {
    "small": Recipe(
        backbone="resnet18", backbone_options={"small_stem": True},
        optimizer="lars", base_lr=0.6, batch_size=256, epochs=1000, warmup_epochs=10, weight_decay=1e-6,
        eta=0.02, clip_lr=True, exclude_bias_n_norm=True,
        method_options={"proj_hidden_dim": 2048, "proj_dim": 128, "num_prototypes": 3000, "temperature": 0.1,
                        "epsilon": 0.05, "sinkhorn_iterations": 3, "queue_size": 3840,
                        "queue_start_frac": 50 / 1000, "freeze_prototypes_frac": 2 / 1000},
        epoch_options={"queue_start_steps": 50, "freeze_prototypes_steps": 2},  # absolute epochs, as solo-learn's
        # two 32-px crops and no local ones; colour jitter strength 0.8; no blur at 32 px
        views=ViewConfig(crops=[CropSpec(count=2, size=1.0, scale=(0.08, 1.0), blur_p=0.0)], jitter_p=0.8,
                         brightness=0.8, contrast=0.8, saturation=0.8, hue=0.2, grayscale_p=0.2),
        sources={"backbone": f"{SOLO}.yaml (resnet18, CIFAR stem)",
                 "optimizer": f"{SOLO}.yaml (lars, eta 0.02, clip_lr, exclude_bias_n_norm)",
                 "base_lr": f"{SOLO}.yaml (lr 0.6, scaled by batch/256)", "batch_size": f"{SOLO}.yaml",
                 "epochs": f"{SOLO}.yaml (max_epochs 1000)", "warmup_epochs": "solo-learn warmup_cosine default (10)",
                 "weight_decay": f"{SOLO}.yaml (1e-6)",
                 "method_options": f"{SOLO}.yaml (proj 2048 -> 128, 3000 prototypes, temperature 0.1, queue 3840 "
                                   "from epoch 50, prototypes frozen 2 epochs); solo-learn swav.py defaults "
                                   "(sk_epsilon 0.05, sk_iters 3)",
                 "views": f"solo-learn cifar augmentations/symmetric.yaml (2 crops of 32 px); blur 0.0 from {SOLO}.sh"},
        notes="No multi-crop: solo-learn trains CIFAR SwAV on two 32-px crops. No blur as in swav.sh "
              "(symmetric.yaml has p 0.5); the cosine ends at 0 (swav.sh: min_lr 0.0006)."),
    "large": Recipe(
        backbone="resnet50", backbone_options={"small_stem": False},
        optimizer="lars", base_lr=0.6, batch_size=256, epochs=200, warmup_epochs=0, final_lr=0.0006,
        weight_decay=1e-6, eta=0.001, clip_lr=False, exclude_bias_n_norm=False,
        method_options={"proj_hidden_dim": 2048, "proj_dim": 128, "num_prototypes": 3000, "temperature": 0.1,
                        "epsilon": 0.05, "sinkhorn_iterations": 3, "queue_size": 3840,
                        "queue_start_frac": 15 / 200, "freeze_prototypes_frac": 1 / 200},
        epoch_options={"queue_start_steps": 15, "freeze_prototypes_steps": 1},  # --epoch_queue_starts 15, 5005 its
        # the paper's 6 local crops are 96 px of a 224-px input (SWAV_VIEWS's 0.5 would give 112 px)
        views=ViewConfig.from_dict({"crops": [CropSpec(count=2, size=1.0, scale=(0.14, 1.0), blur_p=0.5),
                                              CropSpec(count=6, size=96 / 224, scale=(0.05, 0.14), blur_p=0.5)]},
                                   base=SWAV_VIEWS),
        sources={"backbone": "facebookresearch/swav scripts/swav_200ep_bs256_pretrain.sh (--arch resnet50)",
                 "optimizer": "swav main_swav.py (SGD momentum 0.9 in apex LARC, trust_coefficient 0.001, "
                              "clip False, on all parameters)",
                 "base_lr": "swav_200ep_bs256_pretrain.sh (--base_lr 0.6 at batch 256)",
                 "batch_size": "swav_200ep_bs256_pretrain.sh (4 GPUs x 64)",
                 "epochs": "swav_200ep_bs256_pretrain.sh (--epochs 200)",
                 "warmup_epochs": "swav_200ep_bs256_pretrain.sh (--warmup_epochs 0)",
                 "final_lr": "swav_200ep_bs256_pretrain.sh (--final_lr 0.0006)",
                 "weight_decay": "swav_200ep_bs256_pretrain.sh (--wd 0.000001)",
                 "method_options": "swav_200ep_bs256_pretrain.sh (--feat_dim 128, --nmb_prototypes 3000, "
                                   "--temperature 0.1, --epsilon 0.05, --sinkhorn_iterations 3, --queue_length 3840, "
                                   "--epoch_queue_starts 15, --freeze_prototypes_niters 5005 = 1 epoch); "
                                   "main_swav.py --hidden_mlp 2048",
                 "views": "swav_200ep_bs256_pretrain.sh (2x224 of 14-100 %, 6x96 of 5-14 %); paper sec. 4 / "
                          "src/multicropdataset.py (jitter 0.8/0.8/0.8/0.2 p 0.8, grey 0.2, blur p 0.5)"},
        notes="Biases and BN parameters take no weight decay here (param_groups); SwAV decays every parameter."),
}


@register("swav", family="clustering", recipes=RECIPES, paper="arXiv:2006.09882")
class SwAV(Method):
    def __init__(self, backbone, views, proj_hidden_dim: int = 2048, proj_dim: int = 128,
                 num_prototypes: int = 3000, temperature: float = 0.1, epsilon: float = 0.05,
                 sinkhorn_iterations: int = 3, queue_size: int = 3840, queue_start_frac: float = 0.02,
                 freeze_prototypes_frac: float = 0.01, queue_start_steps: int | None = None,
                 freeze_prototypes_steps: int | None = None):
        super().__init__(backbone, views)
        self.projector = mlp(backbone.feature_dim, proj_hidden_dim, proj_dim)
        self.prototypes = Prototypes(proj_dim, num_prototypes)
        # one queue per assigned (global) crop; all-zero rows mark a queue still filling
        self.register_buffer("queue", torch.zeros(global_crop_count(views.config), queue_size, proj_dim))
        self.temperature, self.epsilon, self.sinkhorn_iterations = temperature, epsilon, sinkhorn_iterations
        self.queue_start_frac, self.freeze_prototypes_frac = queue_start_frac, freeze_prototypes_frac
        # in steps (the resolver converts the recipe's epochs); where given they win over the fractions
        self.queue_start_steps, self.freeze_prototypes_steps = queue_start_steps, freeze_prototypes_steps

    def training_step(self, images, gen, step, total_steps):
        global_crops, local_crops = split_crops(self.views(images, gen))
        # the projector's batch norm over all crops at once, as the official MultiCrop forward
        embeddings = [F.normalize(z, dim=1) for z in embed_crops(self.backbone, self.projector,
                                                                 global_crops + local_crops)]
        frozen = step < (self.freeze_prototypes_steps if self.freeze_prototypes_steps is not None
                         else int(self.freeze_prototypes_frac * total_steps))
        scores = [self.prototypes(z, frozen=frozen) for z in embeddings]
        queue_start = (self.queue_start_steps if self.queue_start_steps is not None
                       else int(self.queue_start_frac * total_steps))
        use_queue = self.queue.shape[1] > 0 and step >= queue_start
        codes, queue_used = [], 0.0
        with torch.no_grad():
            for i, z in enumerate(embeddings[: len(self.queue)]):
                # the codes' scores recomputed in fp32: the loss's scores above ran under autocast
                batch_scores = prototype_scores(z, self.prototypes.weight)
                if use_queue and bool(self.queue[i, -1].any()):
                    batch_scores = torch.cat([prototype_scores(self.queue[i], self.prototypes.weight), batch_scores])
                    queue_used = 1.0
                codes.append(sinkhorn(batch_scores, self.epsilon, self.sinkhorn_iterations)[-len(z):])
                if use_queue:
                    self.queue[i] = torch.cat([z.float(), self.queue[i]])[: self.queue.shape[1]]
        return swav_loss(scores, codes, self.temperature), {"queue_used": queue_used}

    @torch.no_grad()
    def after_step(self, step, total_steps):
        self.prototypes.normalize_()

    def parts(self):
        return {"backbone": self.backbone, "heads": torch.nn.ModuleDict(
            {"projector": self.projector, "prototypes": self.prototypes})}
