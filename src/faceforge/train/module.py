"""The LightningModule that trains a backbone with a margin head: :class:`FaceRecognitionModule`
(preprocess → backbone → embedding → head → loss), with undecodable samples dropped or replaced,
Partial FC built in :meth:`configure_model`, backbone freezing, EMA weights and checkpoints that resume
exactly, also at another world size. Details: docs/training.md, "Options in detail", "Resume" and
"Module".
"""

from __future__ import annotations

import copy
import random
from typing import Any

import lightning as L
import numpy as np
import torch
from torch import nn

from faceforge.errors import FaceforgeError
from faceforge.heads import create_head
from faceforge.heads.partial_fc import PartialFC, ddp_ignore_partial_fc
from faceforge.models.build import build_backbone
from faceforge.models.face_cfg import FaceConfig, preprocess
from faceforge.train._lightning import shift_batch_progress
from faceforge.train.config import resolve_monitor
from faceforge.train.optim import build_optimizer, lr_factor, param_groups

CHECKPOINT_FORMAT = 2


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
        self.num_classes = num_classes
        tcfg = config["trainer"]
        self.backbone = build_backbone(config["model"]["backbone"], config["data"]["image_size"])
        self.face_cfg: FaceConfig = getattr(self.backbone, "face_cfg", FaceConfig())
        hcfg = dict(config["model"]["head"])
        self.head_name = hcfg.pop("name", None)
        self.head_kwargs = hcfg
        if not self.head_name:
            raise FaceforgeError("model.head.name is missing (e.g. --model.head.name arcface)")
        self.partial_fc = config["model"].get("partial_fc")
        self.head: nn.Module | None = None
        if self.partial_fc is None:
            self.head = create_head(self.head_name, self.face_cfg.embedding_size, num_classes, **hcfg)
        self.ema_decay = tcfg.get("ema_decay")
        self.ema_backbone: nn.Module | None = None
        self.ema_updates = 0  # optimizer steps averaged so far (the decay's warm-up counts them)
        if self.ema_decay is not None:
            self.ema_backbone = copy.deepcopy(self.backbone).requires_grad_(False)
        self.freeze_epochs = int(tcfg.get("freeze_backbone_epochs") or 0)
        self.channels_last = bool(tcfg.get("channels_last"))
        self.flip = bool(config["data"]["flip"])
        self.skipped_in_epoch = 0
        self.epoch_stats = [0.0, 0.0, 0]  # loss sum, accuracy sum, steps (for the epoch summary)
        self.calibration: dict[str, Any] = {}
        self._backbone_fn: Any = None  # torch.compile'd backbone (not a submodule: same state_dict keys)
        self._pending_rng: dict[str, Any] | None = None
        self._mixup: Any = None  # faceforge.data.mixup.MixupTable of data.mixup (set_mixup)
        if config["data"].get("mixup") and self.partial_fc is not None:
            raise FaceforgeError("data.mixup cannot be combined with model.partial_fc")

    # ------------------------------------------------------------------ building
    def configure_model(self) -> None:
        """Build Partial FC once the process group exists (its shard depends on the rank)."""
        if self.head is None:
            rate = float(self.partial_fc.get("sample_rate", 1.0))
            self.head = PartialFC(
                self.face_cfg.embedding_size,
                self.num_classes,
                margin_head=self.head_name,
                sample_rate=rate,
                **self.head_kwargs,
            )
            ddp_ignore_partial_fc(self)
        if self.channels_last:
            self.backbone.to(memory_format=torch.channels_last)
            if self.ema_backbone is not None:
                self.ema_backbone.to(memory_format=torch.channels_last)
        if self.config["trainer"].get("compile") and self._backbone_fn is None:
            self._backbone_fn = torch.compile(self.backbone)

    @property
    def pfc(self) -> PartialFC | None:
        """The Partial FC head, or ``None`` for a full head."""
        return self.head if isinstance(self.head, PartialFC) else None

    def _embed_for_training(self, images: torch.Tensor) -> torch.Tensor:
        x = preprocess(images, self.face_cfg)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        fn = self._backbone_fn or self.backbone
        if self.current_epoch < self.freeze_epochs:
            self.backbone.eval()
            trunk, neck = getattr(self.backbone, "trunk", None), getattr(self.backbone, "neck", None)
            if trunk is None or neck is None:
                with torch.no_grad():
                    return fn(x).detach()
            with torch.no_grad():
                feats = trunk(x)
            # The neck is new (never pretrained): frozen at its random initialisation it would hand
            # the head a fixed random projection of the trunk's features for the whole warm-up.
            neck.train()
            return neck(feats)
        self.backbone.train()
        return fn(x)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Raw embeddings ``[B, E]`` for uint8 (or already normalised float) images ``[B, 3, H, W]``.

        Outside training mode the EMA backbone answers when there is one.
        """
        net = self.ema_backbone if (self.ema_backbone is not None and not self.training) else self.backbone
        x = preprocess(images, self.face_cfg)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return net(x)

    # ------------------------------------------------------------------ training
    def _distributed(self) -> bool:
        return self._trainer is not None and self.trainer.world_size > 1

    def set_mixup(self, table: Any) -> None:
        """Labels ``num_classes + r`` are mixed identity ``r`` of ``table``
        (:class:`faceforge.data.mixup.MixupTable`): trained as ``phi·a + (1 − phi)·b``."""
        self._mixup = table

    def _resolve_mixup(
        self, labels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """(first class of every sample, second class, weight of the first); the last two ``None``
        when no sample of the batch is a mixed identity."""
        virtual = labels >= self.num_classes
        if self._mixup is None or not bool(virtual.any()):
            return labels, None, None
        t = self._mixup
        r = (labels - self.num_classes).clamp_min(0).cpu()
        if int(r.max()) >= len(t):
            raise FaceforgeError(
                f"label {int(labels.max())} is past the {len(t)} mixed identities of data.mixup"
            )
        dev = labels.device
        a, b, phi = t.a[r].to(dev), t.b[r].to(dev), t.phi[r].to(dev)
        one = torch.ones_like(phi)
        return (
            torch.where(virtual, a, labels),
            torch.where(virtual, b, labels),
            torch.where(virtual, phi, one),
        )

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor | None:
        images, labels = batch
        good = labels >= 0
        n_bad = int((~good).sum())
        if n_bad:
            self.skipped_in_epoch += n_bad
            if self._distributed() or self.pfc is not None:
                if not bool(good.any()):
                    raise FaceforgeError(f"every image of batch {batch_idx} failed to decode")
                first = int(good.nonzero()[0])
                images = torch.where(good[:, None, None, None], images, images[first : first + 1])
                labels = torch.where(good, labels, labels[first])
            else:
                images, labels = images[good], labels[good]
        if labels.numel() < 2:
            return None
        if self.flip:
            # Mirror a random half of the batch: the cheapest augmentation and the one the
            # flip-test at evaluation time assumes.
            m = torch.rand(images.shape[0], device=images.device) < 0.5
            images = torch.where(m[:, None, None, None], images.flip(-1), images)
        steps_per_epoch = max(1, self.trainer.num_training_batches) if self._trainer else 1
        assert self.head is not None
        self.head.set_progress(self.global_step / steps_per_epoch, self.global_step)
        emb = self._embed_for_training(images)
        n = labels.numel()
        labels, labels_b, phi = self._resolve_mixup(labels)
        if self.pfc is not None:
            loss = self.pfc(emb, labels)
            acc = None
        else:
            logits, cos = self.head.logits_and_cosine(emb, labels)
            if labels_b is None or phi is None:
                loss = self.head.loss_from_logits(logits, labels)
            else:  # soft label phi·a + (1 − phi)·b (rows that are no mix have phi = 1)
                logits_b, _ = self.head.logits_and_cosine(emb, labels_b)
                loss = self.head.loss_from_logits(logits, labels, phi) + self.head.loss_from_logits(
                    logits_b, labels_b, 1 - phi
                )
            # Nearest centre by plain cosine: the margin lowers the target logit on purpose, so the
            # argmax of the logits reads 0 while cos(θ_y + m) < max cos θ_j, even when every sample
            # already lies nearest its own class centre.
            acc = (cos.detach().argmax(1) == labels).float().mean()
        if not torch.isfinite(loss):
            raise FaceforgeError(
                f"training loss became {loss.item()} at step {self.global_step}; lower optimizer.lr "
                "or use --trainer.precision 32-true"
            )
        self.epoch_stats[0] += float(loss.detach())
        self.epoch_stats[1] += float(acc) if acc is not None else 0.0
        self.epoch_stats[2] += 1
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=n)
        if acc is not None:
            self.log("train/acc", acc, prog_bar=True, on_step=True, on_epoch=True, batch_size=n)
        margin = getattr(getattr(self.head, "margin_head", self.head), "margin", 0.0)
        self.log("train/margin", float(margin), on_step=True, batch_size=n)
        return loss

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        if self._pending_rng is not None:
            # Restored here, not at load time: everything Lightning does between loading and the
            # first step (building loaders, prefetching) then cannot shift the training RNG.
            _set_rng(self._pending_rng, self.global_rank)
            self._pending_rng = None

    def configure_gradient_clipping(
        self,
        optimizer: torch.optim.Optimizer,
        gradient_clip_val: Any = None,
        gradient_clip_algorithm: Any = None,
    ) -> None:
        """``optimizer.clip_grad_norm`` on the backbone only (gradients are already unscaled under fp16)."""
        max_norm = self.config["optimizer"].get("clip_grad_norm")
        if max_norm is not None:
            torch.nn.utils.clip_grad_norm_(
                [p for p in self.backbone.parameters() if p.grad is not None], float(max_norm)
            )
        if gradient_clip_val is not None:
            self.clip_gradients(optimizer, gradient_clip_val, gradient_clip_algorithm)

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        super().optimizer_step(*args, **kwargs)
        if self.ema_backbone is not None:
            self.update_ema()

    def ema_decay_now(self) -> float:
        """The decay of the next update: ``min(d, (1 + n) / (10 + n))`` after ``n`` updates.

        The warm-up is TensorFlow's ``ExponentialMovingAverage(num_updates=...)``: without it the
        average holds ``d^n`` of the random initialisation after ``n`` steps (0.998^800 ≈ 20 %), and a
        BatchNorm network whose weights are part random no longer matches any statistics: its
        embeddings collapse to one vector (measured: validation accuracy 0.5 for 8 epochs).
        """
        assert self.ema_decay is not None
        n = self.ema_updates
        return min(float(self.ema_decay), (1.0 + n) / (10.0 + n))

    @torch.no_grad()
    def update_ema(self) -> None:
        """``ema ← d·ema + (1 − d)·w`` for parameters and BatchNorm statistics (floating buffers).

        ``d`` warms up (:meth:`ema_decay_now`); integer buffers (batch counters) are copied. Averaging
        the running statistics with the weights keeps them describing the averaged network, as in
        timm's ``ModelEmaV2``; copying the live network's statistics did not (docs/training.md).
        """
        assert self.ema_backbone is not None and self.ema_decay is not None
        d = self.ema_decay_now()
        for e, w in zip(self.ema_backbone.parameters(), self.backbone.parameters(), strict=True):
            e.mul_(d).add_(w.detach(), alpha=1 - d)
        for e, w in zip(self.ema_backbone.buffers(), self.backbone.buffers(), strict=True):
            if e.is_floating_point():
                e.mul_(d).add_(w.detach().to(e.dtype), alpha=1 - d)
            else:
                e.copy_(w)
        self.ema_updates += 1

    def configure_optimizers(self) -> Any:
        ocfg, scfg = self.config["optimizer"], self.config["scheduler"]
        wd = float(ocfg["weight_decay"])
        hwd = wd if ocfg.get("head_weight_decay") is None else float(ocfg["head_weight_decay"])
        assert self.head is not None
        head_lr = float(ocfg["lr"]) * float(ocfg.get("head_lr_scale", 1.0))
        opt = build_optimizer(ocfg, param_groups(self.backbone, self.head, wd, hwd, head_lr))
        if scfg["name"] == "plateau":
            monitor, mode = resolve_monitor(self.config, scfg["monitor"])
            sched = torch.optim.lr_scheduler.ReduceLROnPlateau(
                opt, mode=mode, factor=float(scfg["gamma"]), patience=int(scfg["patience"])
            )
            return {
                "optimizer": opt,
                "lr_scheduler": {"scheduler": sched, "interval": "epoch", "monitor": monitor, "strict": True},
            }
        total = int(self.trainer.estimated_stepping_batches)
        accum = max(1, int(self.trainer.accumulate_grad_batches))
        steps_per_epoch = max(1, int(self.trainer.num_training_batches) // accum)

        def factor(step: int) -> float:
            return lr_factor(step, scfg, steps_per_epoch, total)

        sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    # ------------------------------------------------------------------ checkpoints
    def _pfc_opt_index(self) -> int:
        return sum(1 for _ in self.backbone.parameters())

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Plain types and tensors only, so the checkpoint loads with torch.load(weights_only=True).
        # Runs on every rank (Lightning dumps the state everywhere, rank 0 writes): collectives are safe.
        checkpoint["face_cfg"] = self.face_cfg.to_dict()
        checkpoint["calibration"] = dict(self.calibration)
        checkpoint["faceforge_format"] = CHECKPOINT_FORMAT
        checkpoint["faceforge_epoch_stats"] = [float(x) for x in self.epoch_stats]
        checkpoint["faceforge_world_size"] = int(self.trainer.world_size) if self._trainer else 1
        checkpoint["faceforge_rng"] = self._gather_rng()
        pfc = self.pfc
        if pfc is not None and pfc.distributed and checkpoint.get("optimizer_states"):
            idx = self._pfc_opt_index()
            states = checkpoint["optimizer_states"][0]["state"]
            if idx in states:
                # A copy: optimizer.state_dict() shares the per-parameter dicts with the live optimizer.
                states[idx] = {
                    k: pfc.gather_full(v)
                    if torch.is_tensor(v) and v.dim() >= 1 and v.shape[0] == pfc.num_local
                    else v
                    for k, v in states[idx].items()
                }
            checkpoint["faceforge_pfc_opt_index"] = idx
        if self.ema_backbone is not None:
            sd = checkpoint["state_dict"]
            for k in [k for k in sd if k.startswith("backbone.")]:
                sd["raw_" + k] = sd[k]
                sd[k] = sd.pop("ema_" + k)
            checkpoint["faceforge_ema"] = True
            checkpoint["faceforge_ema_updates"] = int(self.ema_updates)
        # Weights are stored in fp32 whatever the training precision (a half-precision copy would
        # lose what the mixed-precision master weights hold, and inference expects fp32).
        sd = checkpoint["state_dict"]
        for k, v in sd.items():
            if torch.is_tensor(v) and v.dtype in (torch.float16, torch.bfloat16):
                sd[k] = v.float()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        sd = checkpoint["state_dict"]
        if checkpoint.get("faceforge_ema"):
            for k in [k for k in sd if k.startswith("raw_backbone.")]:
                plain = k[len("raw_") :]
                sd["ema_" + plain] = sd[plain]
                sd[plain] = sd.pop(k)
            if self.ema_backbone is None:  # resumed without EMA: drop the average
                for k in [k for k in sd if k.startswith("ema_backbone.")]:
                    del sd[k]
            n = checkpoint.get("faceforge_ema_updates", checkpoint.get("global_step", 0))
            self.ema_updates = int(n) if isinstance(n, int) and not isinstance(n, bool) and n >= 0 else 0
        elif self.ema_backbone is not None:  # EMA switched on at resume: start it from the weights
            for k in [k for k in sd if k.startswith("backbone.")]:
                sd["ema_" + k] = sd[k].clone()
        if "faceforge_epoch_stats" in checkpoint:
            loss, acc, n = checkpoint["faceforge_epoch_stats"]
            self.epoch_stats = [float(loss), float(acc), int(n)]
        pfc = self.pfc
        idx = checkpoint.get("faceforge_pfc_opt_index")
        if pfc is not None and idx is not None and checkpoint.get("optimizer_states"):
            states = checkpoint["optimizer_states"][0]["state"]
            if idx in states:
                states[idx] = {
                    k: pfc.local_rows(v).clone()
                    if torch.is_tensor(v) and v.dim() >= 1 and v.shape[0] == pfc.num_classes
                    else v
                    for k, v in states[idx].items()
                }
        self._pending_rng = checkpoint.get("faceforge_rng")
        if self._trainer is not None:
            _rescale_progress(checkpoint, self.trainer)

    def _gather_rng(self) -> dict[str, Any]:
        cpu = torch.get_rng_state()
        cuda = torch.cuda.get_rng_state() if self.device.type == "cuda" else None
        if self._distributed():
            cpu_all = [t.cpu() for t in self.all_gather(cpu.to(self.device))]
            cuda_all = [t.cpu() for t in self.all_gather(cuda.to(self.device))] if cuda is not None else None
        else:
            cpu_all, cuda_all = [cpu], ([cuda] if cuda is not None else None)
        np_state = np.random.get_state()  # noqa: NPY002 (the legacy global RNG is what to save)
        return {
            "torch": cpu_all,
            "cuda": cuda_all,
            "numpy": {
                "keys": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
                "pos": int(np_state[2]),
                "has_gauss": int(np_state[3]),
                "gauss": float(np_state[4]),
            },
            "python": random.getstate(),
        }


def _set_rng(state: dict[str, Any], rank: int) -> None:
    """Restore the RNG states saved by :meth:`FaceRecognitionModule._gather_rng` for ``rank``."""
    cpu = state["torch"]
    torch.set_rng_state(cpu[rank % len(cpu)].to(torch.uint8))
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"][rank % len(state["cuda"])].to(torch.uint8).cpu())
    n = state["numpy"]
    np.random.set_state(  # noqa: NPY002
        ("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"])
    )
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))


def _rescale_progress(checkpoint: dict[str, Any], trainer: L.Trainer) -> None:
    """Translate Lightning's batch counters of the current epoch to this run's global batch.

    When the world size (or per-device batch) changed, the same number of trained images is a
    different number of batches; the optimizer-step counters stay as they are.
    """
    dm_state = next(
        (v for k, v in checkpoint.items() if k.endswith("FaceDataModule") and isinstance(v, dict)), None
    )
    if not dm_state:
        return
    dm = trainer.datamodule
    new_gb = int(dm.global_micro_batch(trainer.world_size))
    old_gb = int(dm_state["global_micro_batch"])
    if new_gb == old_gb:
        return
    old_done = int(dm_state["batches_done"])
    new_done = int(dm_state["consumed_samples"]) // new_gb
    delta = new_done - old_done
    shift_batch_progress(checkpoint, delta)
