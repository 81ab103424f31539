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

Every step is linear, so ``n`` steps add ``U(s_n)`` to the output, with ``s_0 = 0`` and
``s_{k+1} = s_k + e_0 - D(U(s_k))`` on the low-res grid (``e_0 = lr - D(sr)``). :func:`back_project`
runs that recursion: one ``D`` and one ``U`` at full resolution instead of ``n`` of each.
``D(U(.))`` is separable, and along each axis a 7-tap filter away from the three pixels at either
end, which have their own weights (:func:`low_res_round_trip`; taken from the resampling
functions themselves, so the result is the step-by-step one to float rounding).
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from flowup.resample import downsample, upsample

__all__ = ["back_project", "low_res_error", "low_res_round_trip"]

#: Pixels each side that one pixel of ``D(U(.))`` reads along an axis, and how many pixels at each
#: end of an axis have weights of their own (tests/test_back_projection.py checks both).
ROUND_TRIP_RADIUS = 3


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
    error = low_res_error(sr, lr)  # e_0
    correction = error  # s_1
    for _ in range(steps - 1):
        correction = correction + error - low_res_round_trip(correction, factor)
    return (sr + upsample(correction, factor, clamp=False)).clamp(0, 1)


def low_res_round_trip(x: torch.Tensor, factor: int) -> torch.Tensor:
    """``D(U(x))`` (bicubic up by ``factor``, antialiased bicubic down, unclamped) computed on the
    low-res grid: ``(N, C, h, w)`` -> same shape, channels_last (depthwise convolutions are fastest so)."""
    x = x.contiguous(memory_format=torch.channels_last)
    return _along_axis(_along_axis(x, factor, dim=-2), factor, dim=-1)


def _along_axis(x: torch.Tensor, factor: int, dim: int) -> torch.Tensor:
    """The round trip along one axis (``dim`` -2 or -1) of ``(N, C, h, w)``."""
    n, r = x.shape[dim], ROUND_TRIP_RADIUS
    if n <= 4 * r:  # short axis: the whole matrix
        return torch.movedim(torch.movedim(x, dim, -1) @ _axis_matrix(n, factor).to(x).T, -1, dim)
    ends = _axis_matrix(8 * r, factor).to(x)
    stencil = ends[4 * r, 3 * r : 5 * r + 1]  # an interior row: the 7 taps away from the ends
    shape = (x.shape[1], 1, 2 * r + 1, 1) if dim == -2 else (x.shape[1], 1, 1, 2 * r + 1)
    y = F.conv2d(x, stencil.view(shape[2:]).expand(shape), padding=(r, 0) if dim == -2 else (0, r), groups=x.shape[1])
    moved, out = torch.movedim(x, dim, -1), torch.movedim(y, dim, -1)
    out[..., :r] = moved[..., : 2 * r] @ ends[:r, : 2 * r].T  # the end pixels' own weights
    out[..., -r:] = moved[..., -2 * r :] @ ends[-r:, -2 * r :].T
    return y


@functools.lru_cache(maxsize=64)
def _axis_matrix(n: int, factor: int) -> torch.Tensor:
    """``(n, n)`` float64 matrix of the round trip along an axis of ``n`` pixels: column ``i`` is
    :func:`~flowup.resample.downsample` of :func:`~flowup.resample.upsample` of the ``i``-th unit
    impulse (two pixels wide across: the antialiased kernel mishandles a one-pixel output side)."""
    impulses = torch.eye(n, dtype=torch.float64).reshape(n, 1, n, 1).expand(n, 1, n, 2).contiguous()
    return downsample(upsample(impulses, factor, clamp=False), factor, clamp=False)[:, 0, :, 0].T.contiguous()
