"""Lightning wrappers: the training/validation module and the data module."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from functools import partial

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader
from torchmetrics.classification import MulticlassAccuracy, MulticlassRecall

from emotion_llama.datasets.instruction import EpochSampler, MERRDataset, collate
from emotion_llama.errors import UserError
from emotion_llama.model.fusion import PlaceholderFusion


class NonFiniteLossError(UserError):
    """The loss of a training step is NaN or infinite."""


class EmotionLLaMAModule(L.LightningModule):
    """Trains a model's trainable parts (the fusion model's, or InstructBLIP's Q-Former side); validates with loss
    and closed-set label scoring."""

    def __init__(
        self,
        model: PlaceholderFusion,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., torch.optim.lr_scheduler.LRScheduler] | None,
        label_candidates: Sequence[Sequence[int]],
        checkpoint_frozen: bool = False,
    ):
        super().__init__()
        self.model = model
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.label_candidates = [list(c) for c in label_candidates]
        # Frozen base weights are re-read from their weights folder; saving them would cost ~13 GB at 7B.
        self.checkpoint_frozen = checkpoint_frozen
        self.strict_loading = checkpoint_frozen
        k = len(self.label_candidates)
        self.val_war = MulticlassAccuracy(num_classes=k, average="micro")
        self.val_uar = MulticlassRecall(num_classes=k, average="macro")

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        out = self.model(batch["input_ids"], batch["attention_mask"], batch["features"], labels=batch["labels"])
        if not torch.isfinite(out.loss):  # one bad step spoils every trained weight: stop, export nothing
            raise NonFiniteLossError(
                f"the training loss became {out.loss.item()} at step {self.global_step} (clips "
                f"{', '.join(batch['names'][:4])}): nothing was exported; lower optimizer.lr, or check these "
                "clips' features and labels")
        self.log("train/loss", out.loss, prog_bar=True, batch_size=len(batch["names"]))
        return out.loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        n = len(batch["names"])
        out = self.model(batch["input_ids"], batch["attention_mask"], batch["features"], labels=batch["labels"])
        scores = self.model.score_labels(
            batch["prompt_ids"], batch["prompt_mask"], batch["features"], self.label_candidates
        )
        pred = scores.argmax(-1)
        self.val_war.update(pred, batch["label_index"])
        self.val_uar.update(pred, batch["label_index"])
        self.log("val/loss", out.loss, prog_bar=True, batch_size=n)
        self.log("val/war", self.val_war, prog_bar=True, batch_size=n)
        self.log("val/uar", self.val_uar, batch_size=n)

    def configure_optimizers(self):
        params = [p for p in self.model.parameters() if p.requires_grad]
        optimizer = self.optimizer_factory(params)
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer, num_training_steps=int(self.trainer.estimated_stepping_batches))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        if not self.checkpoint_frozen:
            trainable = {f"model.{n}" for n, p in self.model.named_parameters() if p.requires_grad}
            checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k in trainable}
        # Dropout and task draws continue identically after a resume.
        name, keys, pos, has_gauss, cached = np.random.get_state()
        checkpoint["rng"] = {
            "torch": torch.get_rng_state(),
            "python": random.getstate(),
            "numpy": (name, keys.tolist(), pos, has_gauss, cached),
        }

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        if not self.checkpoint_frozen:
            trainable = {f"model.{n}" for n, p in self.model.named_parameters() if p.requires_grad}
            missing = trainable - set(checkpoint["state_dict"])
            if missing:
                raise UserError(f"the checkpoint resumed from lacks {len(missing)} trainable weights of this model "
                                f"(e.g. {sorted(missing)[0]}): it was made with another model config; set "
                                "resume=false to start afresh, or choose another run_dir")
        rng = checkpoint.get("rng")
        if rng:
            torch.set_rng_state(rng["torch"])
            random.setstate(rng["python"])
            name, keys, pos, has_gauss, cached = rng["numpy"]
            np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))


class EmotionDataModule(L.LightningDataModule):
    def __init__(
        self,
        train_set: MERRDataset,
        val_set: MERRDataset | None,
        pad_id: int,
        batch_size: int = 8,
        val_batch_size: int | None = None,
        num_workers: int = 0,
        seed: int = 0,
        length_grouped: bool = False,
    ):
        super().__init__()
        self.length_grouped = length_grouped
        self.train_set, self.val_set = train_set, val_set
        self.collate = partial(collate, pad_id=pad_id)
        self.batch_size = batch_size
        self.val_batch_size = val_batch_size or batch_size
        self.num_workers = num_workers
        self.seed = seed

    def _loader(self, dataset: MERRDataset, batch_size: int, shuffle: bool) -> DataLoader:
        grouped = self.length_grouped and shuffle
        sampler = EpochSampler(len(dataset), self.seed, shuffle, length=dataset.length if grouped else None,
                               group_size=batch_size * 16)
        return DataLoader(
            dataset,
            batch_size=batch_size,
            sampler=sampler,
            collate_fn=self.collate,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader | list:
        return self._loader(self.val_set, self.val_batch_size, shuffle=False) if self.val_set else []
