"""High-resolution evaluation images and the low-resolution inputs made from them.

Each image is read with :func:`flowup.image_io.load_image` (alpha dropped), **centre-cropped** to
the largest size whose height and width are multiples of ``8 * scale`` (so the low-res input is a
whole number of latent pixels), and made into the low-res input by a named degradation profile
(:data:`flowup.degradations.PROFILES`): ``clean`` is the SR literature's input, antialiased bicubic
with a = -0.5 (Pillow's, as MATLAB's ``imresize``) rounded to 8 bits, as a file holds; ``jpeg``,
``noise`` and ``generator`` add what generator outputs carry. Each image's noise is seeded by the
run's seed and the image's name, so every method sees the same input. ``torch-float`` is the
harness's input up to 2026-12-07 (``flowup.resample.downsample``: ``F.interpolate``'s antialiased
bicubic, a = -0.75, left in float), kept so that the tables made with it still reproduce.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

import random

from flowup.degradations import PROFILES, degrade
from flowup.image_io import IMAGE_EXTENSIONS, load_image
from flowup.resample import downsample

#: The harness's input before degradation profiles (float, torch's kernel): older tables' protocol.
TORCH_FLOAT = "torch-float"
INPUT_PROFILES = (*PROFILES, TORCH_FLOAT)

__all__ = ["EvalImage", "INPUT_PROFILES", "list_images", "centre_crop", "crop_to_multiple", "prepare_image"]

CROP_MODES = ("center", "topleft")


@dataclass
class EvalImage:
    """``hr``: ``(1, 3, H, W)`` cropped high-res image; ``lr``: ``(1, 3, H/scale, W/scale)``."""

    name: str
    path: Path
    hr: torch.Tensor
    lr: torch.Tensor

    @property
    def megapixels(self) -> float:
        return self.hr.shape[-1] * self.hr.shape[-2] / 1e6


def list_images(folders: list[str | Path], limit: int | None = None) -> list[Path]:
    """Image files in ``folders`` (recursively, sorted), at most ``limit``. Clear errors if none."""
    if not folders:
        raise ValueError("no high-res folder given (--hr DIR)")
    paths: list[Path] = []
    for folder in folders:
        folder = Path(folder).expanduser()
        if not folder.exists():
            raise FileNotFoundError(f"high-res folder {folder} does not exist")
        if not folder.is_dir():
            raise NotADirectoryError(f"{folder} is not a folder")
        found = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
        if not found:
            raise FileNotFoundError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in {folder}")
        paths.extend(found)
    if limit is not None:
        if limit < 1:
            raise ValueError(f"--limit must be positive, got {limit}")
        paths = paths[:limit]
    return paths


def crop_to_multiple(image: torch.Tensor, multiple: int, mode: str = "center") -> torch.Tensor:
    """Crop ``(..., H, W)`` to multiples of ``multiple`` (``center`` or ``topleft`` anchored)."""
    if mode not in CROP_MODES:
        raise ValueError(f"unknown crop mode {mode!r}; choose one of {CROP_MODES}")
    h, w = image.shape[-2:]
    new_h, new_w = h - h % multiple, w - w % multiple
    if new_h == 0 or new_w == 0:
        raise ValueError(f"image {h}x{w} is smaller than {multiple} px in a side")
    top, left = ((h - new_h) // 2, (w - new_w) // 2) if mode == "center" else (0, 0)
    return image[..., top : top + new_h, left : left + new_w]


def centre_crop(image: torch.Tensor, side: int, multiple: int = 8) -> torch.Tensor:
    """The centre ``side`` x ``side`` of ``(..., H, W)`` (less where a side is shorter), its corner
    and sides on multiples of ``multiple``: what ``eval native --input-crop`` scores."""
    image = crop_to_multiple(image, multiple)
    h, w = min(side, image.shape[-2]), min(side, image.shape[-1])
    top, left = (image.shape[-2] - h) // 2 // multiple * multiple, (image.shape[-1] - w) // 2 // multiple * multiple
    return crop_to_multiple(image[..., top : top + h, left : left + w], multiple)


def prepare_image(path: Path, scale: int, root: Path | None = None, crop: str = "center",
                  degrade_profile: str = "clean", seed: int = 0) -> EvalImage:  # fmt: skip
    """Load ``path``, crop to a multiple of ``8 * scale``, make the low-res input by the named
    degradation profile (8-bit values; noise seeded by ``seed`` and the image's name)."""
    if degrade_profile not in INPUT_PROFILES:
        raise ValueError(f"unknown degradation profile {degrade_profile!r}; choose one of {', '.join(INPUT_PROFILES)}")
    rgb = load_image(path).rgb
    hr = crop_to_multiple(rgb, 8 * scale, crop)[None].contiguous()
    name = str(path.relative_to(root).with_suffix("")) if root is not None else path.stem
    if root is not None:
        name = f"{root.name}/{name}"
    if degrade_profile == TORCH_FLOAT:
        lr = downsample(hr, scale)
    else:
        lr = degrade(hr[0], scale, PROFILES[degrade_profile], random.Random(f"{seed}/{name}"))[None]
    return EvalImage(name=name, path=path, hr=hr, lr=lr)
