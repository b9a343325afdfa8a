"""The LightningModule that trains a backbone with a margin head.

image (uint8) → preprocess (the backbone's mean/std) → backbone → embedding → head → loss.
Samples whose label is ``-1`` (images that failed to decode) are dropped from the step and counted.
"""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch

from faceforge.errors import FaceforgeError
from faceforge.heads import create_head
from faceforge.models.build import build_backbone
from faceforge.models.face_cfg import FaceConfig, preprocess


class FaceRecognitionModule(L.LightningModule):
    """Backbone + margin head trained with cross-entropy (or the head's focal loss).

    Args:
        config: the resolved training config (see :mod:`faceforge.train.config`); it is saved in the
            checkpoint's ``hyper_parameters`` so the run can be rebuilt from the checkpoint alone.
        num_classes: number of training identities.
    """

    def __init__(self, config: dict[str, Any], num_classes: int) -> None:
        super().__init__()
        self.save_hyperparameters({"config": config, "num_classes": num_classes})
        self.config = config
        self.backbone = build_backbone(config["model"]["backbone"], config["data"]["image_size"])
        self.face_cfg: FaceConfig = getattr(self.backbone, "face_cfg", FaceConfig())
        hcfg = dict(config["model"]["head"])
        name = hcfg.pop("name", None)
        if not name:
            raise FaceforgeError("model.head.name is missing (e.g. --model.head.name arcface)")
        self.head = create_head(name, self.face_cfg.embedding_size, num_classes, **hcfg)
        self.flip = bool(config["data"]["flip"])
        self.skipped_in_epoch = 0
        self.epoch_stats = [0.0, 0.0, 0]  # loss sum, accuracy sum, steps (for the epoch summary)
        self.calibration: dict[str, Any] = {}

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Raw embeddings ``[B, E]`` for uint8 (or already normalised float) images ``[B, 3, H, W]``."""
        return self.backbone(preprocess(images, self.face_cfg))

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor | None:
        images, labels = batch
        good = labels >= 0
        n_bad = int((~good).sum())
        if n_bad:
            self.skipped_in_epoch += n_bad
            images, labels = images[good], labels[good]
        if labels.numel() < 2:
            return None
        if self.flip:
            # Mirror a random half of the batch: the cheapest augmentation and the one the
            # flip-test at evaluation time assumes.
            m = torch.rand(images.shape[0], device=images.device) < 0.5
            images = torch.where(m[:, None, None, None], images.flip(-1), images)
        steps_per_epoch = max(1, self.trainer.num_training_batches) if self.trainer else 1
        self.head.set_progress(self.global_step / steps_per_epoch, self.global_step)
        emb = self(images)
        logits = self.head(emb, labels)
        loss = self.head.loss_from_logits(logits, labels)
        if not torch.isfinite(loss):
            raise FaceforgeError(
                f"training loss became {loss.item()} at step {self.global_step}; lower optimizer.lr "
                "or use --trainer.precision 32-true"
            )
        acc = (logits.argmax(1) == labels).float().mean()
        self.epoch_stats[0] += float(loss.detach())
        self.epoch_stats[1] += float(acc)
        self.epoch_stats[2] += 1
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=labels.numel())
        self.log("train/acc", acc, prog_bar=True, on_step=True, on_epoch=True, batch_size=labels.numel())
        self.log("train/margin", self.head.margin, on_step=True, batch_size=labels.numel())
        return loss

    def configure_optimizers(self) -> Any:
        ocfg, scfg = self.config["optimizer"], self.config["scheduler"]
        wd = float(ocfg["weight_decay"])
        hwd = wd if ocfg.get("head_weight_decay") is None else float(ocfg["head_weight_decay"])
        # No weight decay on BatchNorm/PReLU/bias parameters: decaying them only slows convergence.
        decay, no_decay = [], []
        for p in self.backbone.parameters():
            (decay if p.ndim > 1 else no_decay).append(p)
        groups = [
            {"params": decay, "weight_decay": wd},
            {"params": no_decay, "weight_decay": 0.0},
            {"params": list(self.head.parameters()), "weight_decay": hwd},
        ]
        name = ocfg["name"]
        lr = float(ocfg["lr"])
        if name == "sgd":
            opt = torch.optim.SGD(groups, lr=lr, momentum=float(ocfg["momentum"]))
        elif name == "adamw":
            opt = torch.optim.AdamW(groups, lr=lr)
        else:
            raise FaceforgeError(f"optimizer.name {name!r} is not one of: sgd, adamw")
        total = self.trainer.estimated_stepping_batches
        steps_per_epoch = max(1, self.trainer.num_training_batches)
        warm = int(float(scfg["warmup_epochs"]) * steps_per_epoch)
        floor = float(scfg["min_lr_ratio"])
        sname = scfg["name"]
        if sname not in ("cosine", "constant"):
            raise FaceforgeError(f"scheduler.name {sname!r} is not one of: cosine, constant")

        def factor(step: int) -> float:
            if step < warm:
                return (step + 1) / warm
            if sname == "constant":
                return 1.0
            t = min(1.0, (step - warm) / max(1, total - warm))
            return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * t))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Plain types only, so the checkpoint loads with torch.load(weights_only=True).
        checkpoint["face_cfg"] = self.face_cfg.to_dict()
        checkpoint["calibration"] = dict(self.calibration)
        checkpoint["faceforge_format"] = 1
