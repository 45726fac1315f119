"""LeJEPA (Balestriero & LeCun, 2025, arXiv:2511.08544): multi-crop views through one encoder and
an MLP projector; every view's embedding predicts the mean embedding of the global views, and
SIGReg pushes each view's embedding distribution towards an isotropic Gaussian. Loss
(1 - w) * prediction + w * SIGReg with w = sigreg_weight (the paper's lambda), fresh random
slicing directions each step; no EMA teacher, no stop-gradient, no predictor."""
from __future__ import annotations

import torch

from core.augment import CropSpec, ViewConfig
from core.heads import mlp
from core.losses.sigreg import lejepa_loss, random_directions
from core.methods.base import Method
from core.methods.multicrop import global_crop_count
from core.methods.registry import register
from core.methods.recipe import Recipe

# The official recipe (rbalestr-lab/lejepa README): 2 global crops (224 px, 30-100 %) and 6 local ones
# (98 px, 5-30 %), all with the same distortions: jitter 0.4/0.4/0.2/0.1 p 0.8, grey 0.2, blur 0.5,
# solarisation 0.2, flip. Sizes are fractions of the input side (98/224 for the local crops).
LEJEPA_VIEWS = ViewConfig(crops=[CropSpec(count=2, size=1.0, scale=(0.3, 1.0), blur_p=0.5, solarize_p=0.2),
                                 CropSpec(count=6, size=98 / 224, scale=(0.05, 0.3), blur_p=0.5, solarize_p=0.2)],
                          jitter_p=0.8, brightness=0.4, contrast=0.4, saturation=0.2, hue=0.1, grayscale_p=0.2)

README = "rbalestr-lab/lejepa README.md"
MINIMAL = "rbalestr-lab/lejepa MINIMAL.md"
RECIPES = {
    "small": Recipe(
        backbone="vit_tiny", backbone_options={"patch_size": 4},
        optimizer="adamw", base_lr=2e-3, batch_size=256, epochs=800, warmup_epochs=1, final_lr=2e-6,
        weight_decay=0.05,
        method_options={"proj_hidden_dim": 2048, "proj_dim": 16, "num_slices": 256, "sigreg_weight": 0.02},
        # MINIMAL.md's V = 4 identically augmented full-size views (all "global"), without blur at 32 px
        views=ViewConfig(crops=[CropSpec(count=4, size=1.0, scale=(0.08, 1.0), solarize_p=0.2)], jitter_p=0.8,
                         brightness=0.8, contrast=0.8, saturation=0.8, hue=0.2, grayscale_p=0.2),
        sources={"backbone": f"{MINIMAL} (ViT-S/8 on 128-px Imagenette); vit_tiny/4 here for 32 px",
                 "optimizer": f"{MINIMAL} (AdamW, torch default betas)",
                 "base_lr": f"{MINIMAL} (+lr=2e-3 at +bs=256)", "batch_size": f"{MINIMAL} (+bs=256)",
                 "epochs": f"{MINIMAL} (+epochs=800)", "warmup_epochs": f"{MINIMAL} (LinearLR over one epoch)",
                 "final_lr": f"{README} (final LR = initial / 1000)", "weight_decay": f"{MINIMAL} (5e-2)",
                 "method_options": f"{MINIMAL} (MLP 2048-2048-proj_dim, +proj_dim=16, 256 slices, +lamb=0.02)",
                 "views": f"{MINIMAL} HFDataset aug (crop 0.08-1, jitter 0.8/0.8/0.8/0.2 p 0.8, grey 0.2, "
                          "solarisation 0.2, flip; +V=4)"},
        notes="The authors' small-data example (Imagenette at 128 px, ViT-S/8) scaled to 32 px: ViT-Tiny/4 and "
              "no blur (at 32 px the kernel wipes out most of the image; the example blurs with p 0.5). The "
              "cosine ends at the README's initial / 1000, not the example's eta_min 1e-3."),
    "large": Recipe(
        backbone="vit_small", backbone_options={"patch_size": 16},
        optimizer="adamw", base_lr=5e-4, batch_size=256, epochs=100, warmup_epochs=10, final_lr=5e-7,
        weight_decay=0.05,
        method_options={"proj_hidden_dim": 2048, "proj_dim": 128, "num_slices": 1024, "sigreg_weight": 0.05},
        views=LEJEPA_VIEWS,
        sources={"backbone": f"{README} (ViT-L/14 and ConvNeXtV2-H on IN-1K); vit_small/16 here",
                 "optimizer": f"{README} (AdamW for all models)", "base_lr": f"{README} (5e-4)",
                 "batch_size": "not given in the README; 256 here", "epochs": f"{README} results table (IN-1K, 100)",
                 "warmup_epochs": f"{README} (linear warm-up, length not given); 10 here",
                 "final_lr": f"{README} (initial / 1000)", "weight_decay": f"{README} (5e-2 for ViTs)",
                 "method_options": f"{README} (SlicingUnivariateTest num_slices 1024); {MINIMAL} (3-layer MLP, "
                                   "2048 hidden); sigreg_weight 0.05 (the paper's lambda) and proj_dim 128 are "
                                   "this class's defaults",
                 "views": f"{README} Data augmentation and views table"},
        notes="ViT-Small/16 instead of the paper's ViT-L/14 and larger. The README gives the LR without a batch "
              "size; here it is taken at batch 256 and scaled linearly from there. Warm-up length and projector "
              "output width are not in the README."),
}


@register("lejepa", family="latent-prediction", recipes=RECIPES, paper="arXiv:2511.08544")
class LeJEPA(Method):
    def __init__(self, backbone, views, proj_hidden_dim: int = 2048, proj_dim: int = 128, num_slices: int = 1024,
                 sigreg_weight: float = 0.05):
        super().__init__(backbone, views)
        self.projector = mlp(backbone.feature_dim, proj_hidden_dim, proj_dim, layers=3)
        self.num_slices, self.sigreg_weight = num_slices, sigreg_weight
        self.num_global = global_crop_count(views.config)  # every crop of the largest size, not the first spec

    def training_step(self, images, gen, step, total_steps):
        views = self.views(images, gen)
        g = self.num_global  # global views first, then local ones: one encoder pass per size
        groups = [torch.cat(views[:g])] + ([torch.cat(views[g:])] if len(views) > g else [])
        z = self.projector(torch.cat([self.backbone(v) for v in groups])).view(len(views), len(images), -1)
        directions = random_directions(z.shape[-1], self.num_slices, gen, z.device)
        loss, pred, reg = lejepa_loss(z.float(), self.num_global, directions, self.sigreg_weight)
        return loss, {"prediction": pred.detach(), "sigreg": reg.detach()}

    def parts(self):
        return {"backbone": self.backbone, "heads": self.projector}
