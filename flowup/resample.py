"""Pixel-space resampling shared by training, inference and evaluation.

- :func:`downsample`: antialiased bicubic, how low-res inputs are made from high-res images;
- :func:`upsample`: bicubic interpolation (the "bicubic" baseline, and the first half of flowup's
  pixel-space-upsampled source, PSU).

Images are float tensors ``(N, C, H, W)`` in [0, 1]; both clamp their output to [0, 1] unless
``clamp=False`` (the linear operators themselves, as :mod:`flowup.back_projection` needs them for
signed errors).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["downsample", "upsample"]


def downsample(images: torch.Tensor, factor: int, clamp: bool = True) -> torch.Tensor:
    """``(N, C, H, W)`` -> ``(N, C, H // factor, W // factor)``, antialiased bicubic."""
    h, w = images.shape[-2:]
    if h % factor or w % factor:
        raise ValueError(f"size {h}x{w} is not divisible by the factor {factor}")
    out = F.interpolate(images, size=(h // factor, w // factor), mode="bicubic", antialias=True, align_corners=False)
    return out.clamp(0, 1) if clamp else out


def upsample(images: torch.Tensor, factor: int, clamp: bool = True) -> torch.Tensor:
    """``(N, C, H, W)`` -> ``(N, C, H * factor, W * factor)``, bicubic."""
    out = F.interpolate(images, scale_factor=factor, mode="bicubic", align_corners=False)
    return out.clamp(0, 1) if clamp else out
