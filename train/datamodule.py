"""Data for training: cached latent pairs for the loss, a few real images for validation.

- Training reads the latent cache made by ``python -m train prepare`` (:mod:`train.latent_cache`)
  and draws random ``latent_size`` sub-crops.
- Validation reads image files: centre crops of ``val_crop`` pixels, the low-res input made by
  antialiased bicubic downsampling. Unreadable files are skipped with a warning.
"""

from __future__ import annotations

import logging
from pathlib import Path

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, Dataset

from flowup.image_io import ImageReadError, load_image
from flowup.resample import downsample
from train.latent_cache import LatentPairDataset, list_images

__all__ = ["LatentPairDataModule", "ValidationImages"]

log = logging.getLogger(__name__)


class ValidationImages(Dataset):
    """Centre crops ``{"hr_image": (3, s, s), "lr_image": (3, s/r, s/r)}`` of image files."""

    def __init__(self, dirs: list[str], crop: int = 256, scale: int = 2, limit: int | None = None):
        self.items: list[dict[str, torch.Tensor]] = []
        for path in list_images(dirs):
            try:
                image = load_image(path).rgb
            except ImageReadError as err:
                log.warning("skipping validation image %s", err)
                continue
            _, h, w = image.shape
            if min(h, w) < crop:
                continue
            top, left = (h - crop) // 2, (w - crop) // 2
            hr = image[:, top : top + crop, left : left + crop]
            self.items.append({"hr_image": hr, "lr_image": downsample(hr[None], scale)[0]})
            if limit and len(self.items) >= limit:
                break

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return self.items[index]


class LatentPairDataModule(pl.LightningDataModule):
    """Args:
    cache_dir: folder of latent shards from ``python -m train prepare``, or a list of such folders
        (their pairs are pooled).
    latent_size: side of the random latent sub-crops (pixels / 8).
    batch_size: per process. samples_per_epoch: epoch length (random crops per epoch).
    val_dirs: image folders for validation; val_crop: crop side in pixels; val_limit: at most
    this many images; scale: the upscaling factor.
    """

    def __init__(
        self,
        cache_dir: str | list[str] = "cache/taef2-x2-320",
        latent_size: int = 32,
        batch_size: int = 16,
        samples_per_epoch: int = 16000,
        num_workers: int = 0,
        val_dirs: list[str] | None = None,
        val_crop: int = 256,
        val_limit: int | None = 8,
        val_batch_size: int = 4,
        scale: int = 2,
    ):
        super().__init__()
        self.save_hyperparameters()
        self.train_set: LatentPairDataset | None = None
        self.val_set: ValidationImages | None = None

    def setup(self, stage: str | None = None) -> None:
        hp = self.hparams
        if self.train_set is None:
            self.train_set = LatentPairDataset(hp.cache_dir, hp.latent_size, hp.samples_per_epoch)
            for folder, recipe in self.train_set.recipes.items():
                if recipe.get("scale", hp.scale) != hp.scale:
                    raise ValueError(f"cache {folder} was made for scale {recipe['scale']}, not {hp.scale}")
        if self.val_set is None and hp.val_dirs:
            dirs = [d for d in hp.val_dirs if Path(d).exists()]
            self.val_set = ValidationImages(dirs, hp.val_crop, hp.scale, hp.val_limit) if dirs else None

    def train_dataloader(self) -> DataLoader:
        return DataLoader(
            self.train_set, batch_size=self.hparams.batch_size, shuffle=True, drop_last=True,
            num_workers=self.hparams.num_workers, persistent_workers=self.hparams.num_workers > 0,
        )  # fmt: skip

    def val_dataloader(self) -> DataLoader | list:
        if not self.val_set:
            return []
        return DataLoader(self.val_set, batch_size=self.hparams.val_batch_size, shuffle=False)
