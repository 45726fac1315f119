"""SwAV (Caron et al., 2020, arXiv:2006.09882): online clustering by swapped assignments.

Each global crop's prototype scores are turned into balanced codes by Sinkhorn-Knopp; every
other crop (multi-crop: 2 global + small local ones) predicts those codes. For small batches a
queue of past global-crop embeddings joins the Sinkhorn step once it is full; it starts after
`queue_start_frac` of training (epoch 15 of 800 in the paper). Prototypes are kept unit-norm
after every step and get no gradient during the first `freeze_prototypes_frac` of training
(the paper's first epoch).

On several processes each rank keeps its own queue of `queue_size // world_size` rows, its own
global crops' embeddings, as the official code (`queue_length // world_size`). Every rank holds
every rank's rows (each step's embeddings are gathered), so the `queue` buffer is the same on
every rank and a checkpoint carries each rank's queue: on resume rank r takes its rows again,
and a resume onto another world size splits the rows anew."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from core import distributed
from core.augment import CropSpec, ViewConfig
from core.heads import mlp
from core.heads.prototypes import Prototypes
from core.losses.swav import prototype_scores, sinkhorn, swav_loss
from core.methods.base import Method
from core.methods.multicrop import embed_crops, global_crop_count, split_crops
from core.methods.registry import register
from core.methods.recipe import Recipe

# 2x224 crops of scale (0.14, 1) and 6x96 of scale (0.05, 0.14); colour jitter strength 0.8.
SWAV_VIEWS = ViewConfig(
    crops=[CropSpec(count=2, size=1.0, scale=(0.14, 1.0), blur_p=0.5),
           CropSpec(count=6, size=0.5, scale=(0.05, 0.14), blur_p=0.5)],
    brightness=0.8, contrast=0.8, saturation=0.8, hue=0.2,
)


SOLO = "solo-learn scripts/pretrain/cifar/swav"
SEER = "Goyal et al. 2021, arXiv:2103.01988"
VISSL = "facebookresearch/vissl configs/config/pretrain/swav"
CHECKPOINT = ("vissl projects/SEER/README.md, the RG-256GF checkpoint's run name "
              "(swav_ig1b_cosine_rg256gf_noBNhead_wd1e5_"
              "fairstore_bs16_node64_sinkhorn10_proto16k_apex_syncBN64_warmup8k)")
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
    "seer": Recipe(
        # the paper's RegNetY-256GF (1.27e9 trunk parameters, 10444 features): VISSL regnet256Gf_1.yaml
        backbone="regnet_y_256gf", backbone_options={"small_stem": False},
        # SGD momentum 0.9 in LARC, trust 0.001, no clipping, every parameter decayed (swav_8node_resnet.yaml)
        optimizer="lars", eta=0.001, clip_lr=False, exclude_bias_n_norm=False, momentum=0.9,
        # 0.3 per 256 images, linearly scaled: 9.6 at 8192; cosine to a thousandth of the peak
        base_lr=0.3, lr_scaling="linear", final_lr=0.0096,
        batch_size=8192,  # 16 images on each of 512 GPUs (checkpoint name: bs16_node64)
        epochs=1,  # one pass over 1e9 Instagram images, 122K updates at 8192
        warmup_epochs=8000 / 122_000,  # 8K warm-up updates (checkpoint name: warmup8k)
        weight_decay=1e-5,  # checkpoint name: wd1e5
        method_options={"proj_hidden_dim": 8192, "proj_dim": 256, "proj_layers": 3, "proj_batch_norm": False,
                        "num_prototypes": 16_000, "temperature": 0.1, "epsilon": 0.05, "sinkhorn_iterations": 10,
                        "queue_size": 0, "queue_start_frac": 0.0, "freeze_prototypes_frac": 313 / 122_000},
        epoch_options={"freeze_prototypes_steps": 313 / 122_000},  # 313 of its 122K updates, in absolute epochs
        # 2x160 + 4x96 crops of a 224-px input (fractions, so that smaller images keep the ratios)
        views=ViewConfig.from_dict({"crops": [CropSpec(count=2, size=160 / 224, scale=(0.14, 1.0), blur_p=0.5),
                                              CropSpec(count=4, size=96 / 224, scale=(0.05, 0.14), blur_p=0.5)]},
                                   base=SWAV_VIEWS),
        sources={
            "backbone": f"{SEER}, sec. 3.3 (RegNetY-256GF); {VISSL}/models/regnet256Gf_1.yaml (depth 27, w_0 640, "
                        "w_a 230.83, w_m 2.53, group_width 373)",
            "optimizer": f"{SEER} (LARS); {VISSL}/swav_8node_resnet.yaml (sgd + use_larc, trust_coefficient 0.001, "
                         "clip False, momentum 0.9, regularize_bn and regularize_bias True)",
            "base_lr": f"{VISSL}/swav_8node_resnet.yaml (auto_lr_scaling: base_value 0.3 at base_lr_batch_size 256)",
            "final_lr": f"{SEER} (cosine to 0.0096, unverified here); {VISSL}/swav_8node_resnet.yaml decays "
                        "to a thousandth of the peak (4.8 -> 0.0048)",
            "batch_size": f"{CHECKPOINT} (bs16 per GPU x node64 x 8 GPUs = 8192); {SEER}",
            "epochs": f"{SEER} (1B images, 122K iterations: one pass)",
            "warmup_epochs": f"{CHECKPOINT} (warmup8k: 8K of 122K updates)",
            "weight_decay": f"{CHECKPOINT} (wd1e5)",
            "method_options": f"{VISSL}/heads/d10444_d8192_d8192_d256_proto16k.yaml (MLP 10444-8192-8192-256 "
                              f"without BN, 16000 prototypes); {CHECKPOINT} (sinkhorn10, proto16k, noBNhead); "
                              f"{VISSL}/swav_8node_resnet.yaml (temperature 0.1, epsilon 0.05, no queue); "
                              "prototypes frozen 313 iterations as in swav_8node_resnet.yaml",
            "views": f"{VISSL}/transforms/multicrop_6crop_2x160_4x96.yaml (2x160 of 14-100 %, 4x96 of 5-14 %, "
                     "colour distortion strength 1.0, blur p 0.5); vissl projects/SEER/README.md (6 crops, 2x160+4x96)",
        },
        notes="What one machine cannot do: SEER trained the 1.27e9-parameter RegNetY-256GF on 512 V100s (8192 images "
              "a step, 1e9 uncurated images, one pass, about 8 days), with batch-norm statistics synchronised in "
              "groups of 64 GPUs (here: over all processes, or none), Apex O1 mixed precision (here bf16 autocast) "
              "and activation checkpointing (not done here). On one GPU or a CPU, pick a smaller trunk "
              "(backbone regnet_y_8gf, regnet_y_1_6gf, or regnet_y with a tiny design) and a batch that fits; the "
              "LR follows the batch by the linear rule. Without the large batch, SwAV's queue (method_options "
              "queue_size, e.g. 3840) keeps the Sinkhorn step balanced. Not verified against the paper's text here: "
              "epsilon 0.05 (VISSL's SwAV default; the paper may differ), the final LR 0.0096, 122K updates, the "
              "313-step prototype freeze (VISSL's ImageNet default, not SEER's). The stage widths (528, 1056, 2904, "
              "7392) and 695.5M parameters that reviews quote for SEER's RegNetY-256GF are RegNetY-128GF's "
              "(torchvision regnet_y_128gf); the released RG-256GF config gives (746, 1492, 4103, 10444)."),
}


@register("swav", family="clustering", recipes=RECIPES, paper="arXiv:2006.09882")
class SwAV(Method):
    def __init__(self, backbone, views, proj_hidden_dim: int = 2048, proj_dim: int = 128,
                 num_prototypes: int = 3000, temperature: float = 0.1, epsilon: float = 0.05,
                 sinkhorn_iterations: int = 3, queue_size: int = 3840, queue_start_frac: float = 0.02,
                 freeze_prototypes_frac: float = 0.01, queue_start_steps: int | None = None,
                 freeze_prototypes_steps: int | None = None, proj_layers: int = 2, proj_batch_norm: bool = True):
        super().__init__(backbone, views)
        # SEER's head: three layers without batch norm (VISSL swav_head use_bn False)
        self.projector = mlp(backbone.feature_dim, proj_hidden_dim, proj_dim, layers=proj_layers,
                             batch_norm=proj_batch_norm)
        self.prototypes = Prototypes(proj_dim, num_prototypes)
        # one queue per assigned (global) crop, in world_size blocks of rows (one per rank, see
        # `local_queue`); all-zero rows mark a queue still filling
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
        queue = self.local_queue()
        with torch.no_grad():
            for i, z in enumerate(embeddings[: len(self.queue)]):
                # the codes' scores recomputed in fp32: the loss's scores above ran under autocast
                batch_scores = prototype_scores(z, self.prototypes.weight)
                own = sinkhorn(batch_scores, self.epsilon, self.sinkhorn_iterations)
                if use_queue:  # the queue joins once full; both codes computed, so the host never reads it
                    full = queue[i, -1].any()
                    joint = torch.cat([prototype_scores(queue[i], self.prototypes.weight), batch_scores])
                    own = torch.where(full, sinkhorn(joint, self.epsilon, self.sinkhorn_iterations)[-len(z):], own)
                    queue_used = full.float()
                codes.append(own)
            if use_queue:
                self.enqueue(torch.stack([z.float() for z in embeddings[: len(self.queue)]]))
        return swav_loss(scores, codes, self.temperature), {"queue_used": queue_used}

    @property
    def unused_parameters(self) -> bool:
        """The prototypes get no gradient while frozen (DDP must look for them then)."""
        if self.freeze_prototypes_steps is not None:
            return self.freeze_prototypes_steps > 0
        return self.freeze_prototypes_frac > 0

    def local_queue(self):
        """This rank's rows of the queue (a view): (global crops, queue_size // world_size, dim)."""
        rows = self.queue.shape[1] // distributed.world_size()
        return self.queue[:, distributed.rank() * rows : (distributed.rank() + 1) * rows]

    @torch.no_grad()
    def enqueue(self, embeddings):
        """embeddings: this rank's (global crops, B, dim). Every rank's block of rows takes that
        rank's embeddings in front and drops its oldest, on every rank."""
        world = distributed.world_size()
        rows = self.queue.shape[1] // world
        gathered = distributed.gather_detached(embeddings.transpose(0, 1)).transpose(0, 1)  # ranks in order
        for r, batch in enumerate(gathered.chunk(world, dim=1)):
            block = self.queue[:, r * rows : (r + 1) * rows]
            block.copy_(torch.cat([batch, block], dim=1)[:, :rows])

    @torch.no_grad()
    def after_step(self, step, total_steps):
        self.prototypes.normalize_()

    def parts(self):
        return {"backbone": self.backbone, "heads": torch.nn.ModuleDict(
            {"projector": self.projector, "prototypes": self.prototypes})}
