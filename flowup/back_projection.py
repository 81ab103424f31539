"""Low-resolution consistency by iterative back-projection (Irani & Peleg, 1991).

An upscaled image ``sr`` is *consistent* with its input ``lr`` when downsampling it the way the
low-res input was made gives the input back: ``D(sr) = lr``, with ``D`` the antialiased bicubic
downsampling of :func:`flowup.resample.downsample` (the degradation flowup is trained on; used
unclamped here, as the linear operator). The flow
decodes through a lossy codec, so its output drifts from ``lr`` in the low frequencies (colour,
tone), where the input already says what the answer is. Each back-projection step adds the
low-res error back, upsampled:

    ``sr <- sr + U(lr - D(sr))``, ``U`` = bicubic upsampling,

which moves ``sr`` towards ``D(sr) = lr`` and leaves what ``D`` cannot see (the detail the flow
added, the null space of ``D``) almost untouched: the range / null-space split of DDNM (Wang et
al., ICLR 2023), applied once after sampling instead of inside it.

With ``sigma > 0`` the error is smoothed by a Gaussian of ``sigma`` low-res pixels before it is
added, ``sr <- sr + U(G_sigma * (lr - D(sr)))``: the output then agrees with the input in colour
and tone (the low frequencies) but not in its noise or compression artefacts, which a noisy input
would otherwise pin back onto a clean output (the ``denoise`` control, :mod:`flowup.denoise`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from flowup.resample import downsample, upsample

__all__ = ["back_project", "gaussian_smooth", "low_res_error"]


def low_res_error(sr: torch.Tensor, lr: torch.Tensor) -> torch.Tensor:
    """``lr - D(sr)``: ``(N, C, h, w)``, for ``sr`` ``(N, C, H, W)`` an integer multiple of ``lr``."""
    h, w = lr.shape[-2:]
    big_h, big_w = sr.shape[-2:]
    if big_h % h or big_w % w or big_h // h != big_w // w or sr.shape[:2] != lr.shape[:2]:
        raise ValueError(f"sr {tuple(sr.shape)} is not an integer upscale of lr {tuple(lr.shape)}")
    return lr - downsample(sr, big_h // h, clamp=False)


def gaussian_smooth(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """``(N, C, h, w)`` convolved per channel with a Gaussian of ``sigma`` pixels (reflect-padded;
    ``sigma = 0`` returns the input)."""
    if sigma <= 0:
        return images
    radius = max(1, math.ceil(3 * sigma))
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    kernel = torch.exp(-0.5 * (x / sigma) ** 2)
    c = images.shape[1]
    out = images
    for dim in (-1, -2):  # separable: rows, then columns; the kernel shrinks to what a short side can reflect
        r = min(radius, images.shape[dim] - 1)
        k = kernel[radius - r : radius + r + 1]
        k = (k / k.sum()).to(images)
        weight = k.view(1, 1, 1, -1) if dim == -1 else k.view(1, 1, -1, 1)
        padding = (r, r, 0, 0) if dim == -1 else (0, 0, r, r)
        out = F.conv2d(F.pad(out, padding, mode="reflect") if r else out, weight.expand(c, -1, -1, -1), groups=c)
    return out


def back_project(sr: torch.Tensor, lr: torch.Tensor, steps: int, sigma: float = 0.0) -> torch.Tensor:
    """``steps`` back-projection steps: ``(N, C, H, W)`` float in [0, 1] -> same, clamped to [0, 1].

    ``lr`` ``(N, C, h, w)`` is the low-res input ``sr`` was upscaled from (``H = r h``,
    ``W = r w``). ``steps = 0`` returns ``sr`` unchanged. ``sigma``: Gaussian smoothing of the
    low-res error, in low-res pixels (0 = none: full consistency, noise included).
    """
    if steps < 0:
        raise ValueError(f"back-projection steps must be >= 0, got {steps}")
    if steps == 0:
        return sr
    lr = lr.to(sr)
    factor = sr.shape[-1] // lr.shape[-1]
    for _ in range(steps):
        error = gaussian_smooth(low_res_error(sr, lr), sigma)
        sr = sr + upsample(error, factor, clamp=False)
    return sr.clamp(0, 1)
