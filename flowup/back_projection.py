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
"""

from __future__ import annotations

import torch

from flowup.resample import downsample, upsample

__all__ = ["back_project", "low_res_error"]


def low_res_error(sr: torch.Tensor, lr: torch.Tensor) -> torch.Tensor:
    """``lr - D(sr)``: ``(N, C, h, w)``, for ``sr`` ``(N, C, H, W)`` an integer multiple of ``lr``."""
    h, w = lr.shape[-2:]
    big_h, big_w = sr.shape[-2:]
    if big_h % h or big_w % w or big_h // h != big_w // w or sr.shape[:2] != lr.shape[:2]:
        raise ValueError(f"sr {tuple(sr.shape)} is not an integer upscale of lr {tuple(lr.shape)}")
    return lr - downsample(sr, big_h // h, clamp=False)


def back_project(sr: torch.Tensor, lr: torch.Tensor, steps: int) -> torch.Tensor:
    """``steps`` back-projection steps: ``(N, C, H, W)`` float in [0, 1] -> same, clamped to [0, 1].

    ``lr`` ``(N, C, h, w)`` is the low-res input ``sr`` was upscaled from (``H = r h``,
    ``W = r w``). ``steps = 0`` returns ``sr`` unchanged.
    """
    if steps < 0:
        raise ValueError(f"back-projection steps must be >= 0, got {steps}")
    if steps == 0:
        return sr
    lr = lr.to(sr)
    factor = sr.shape[-1] // lr.shape[-1]
    for _ in range(steps):
        error = low_res_error(sr, lr)
        sr = sr + upsample(error, factor, clamp=False)
    return sr.clamp(0, 1)
