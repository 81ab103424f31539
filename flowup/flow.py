"""Flow-matching path math for Coupling Flow Matching (CFM, arXiv 2312.07360).

Conventions (used everywhere in flowup):

- ``x0`` is the *source*: the noise-augmented, upsampled low-res latent,
  ``x0 = sqrt(a) * z_src + sqrt(1 - a) * eps``; the clean ``z_src`` is the conditioning ``cond``.
- ``x1`` is the *target*: the high-res latent ``z_hr``. Both have shape ``(N, C, h, w)``.
- ``t`` runs from 0 (source) to 1 (target). The path is straight (optimal transport):
  ``x_t = (1 - t) * x0 + t * x1`` with constant velocity ``u = x1 - x0``.
- A velocity model is called ``model(x_t, t, cond)`` with ``t`` of shape ``(N,)``.
"""

from __future__ import annotations

import math
from typing import Callable, Literal

import torch

__all__ = [
    "noise_source",
    "sample_time",
    "interpolate",
    "target_velocity",
    "flow_matching_loss",
    "gaussian_velocity",
]

VelocityModel = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def noise_source(
    z_src: torch.Tensor,
    alpha: float,
    noise: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Noise-augment the source latent: ``x0 = sqrt(a) * z_src + sqrt(1 - a) * eps``.

    ``z_src``: ``(N, C, h, w)``; ``alpha`` in (0, 1]; ``alpha = 1`` returns ``z_src`` unchanged.
    """
    if not 0.0 < alpha <= 1.0:
        raise ValueError(f"alpha must be in (0, 1], got {alpha}")
    if alpha == 1.0:
        return z_src
    if noise is None:
        noise = torch.randn(z_src.shape, generator=generator, device=z_src.device, dtype=z_src.dtype)
    return math.sqrt(alpha) * z_src + math.sqrt(1.0 - alpha) * noise


def sample_time(
    n: int,
    distribution: Literal["uniform", "logit_normal"] = "uniform",
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    loc: float = 0.0,
    scale: float = 1.0,
) -> torch.Tensor:
    """Training times ``(n,)`` in [0, 1]: uniform, or logit-normal ``sigmoid(N(loc, scale))``."""
    if distribution == "uniform":
        return torch.rand(n, generator=generator, device=device)
    if distribution == "logit_normal":
        return torch.sigmoid(loc + scale * torch.randn(n, generator=generator, device=device))
    raise ValueError(f"unknown time distribution {distribution!r} (uniform, logit_normal)")


def _expand(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    t = torch.as_tensor(t, dtype=like.dtype, device=like.device)
    return t.reshape(-1, *([1] * (like.ndim - 1))) if t.ndim else t


def interpolate(x0: torch.Tensor, x1: torch.Tensor, t: torch.Tensor | float) -> torch.Tensor:
    """Point on the straight path: ``x_t = (1 - t) * x0 + t * x1``; ``t`` scalar or ``(N,)``."""
    t = _expand(t, x0)
    return (1 - t) * x0 + t * x1


def target_velocity(x0: torch.Tensor, x1: torch.Tensor) -> torch.Tensor:
    """Velocity of the straight path, constant in time: ``u = x1 - x0``."""
    return x1 - x0


def flow_matching_loss(
    model: VelocityModel,
    x1: torch.Tensor,
    z_src: torch.Tensor,
    alpha: float,
    t: torch.Tensor | None = None,
    noise: torch.Tensor | None = None,
    time_distribution: Literal["uniform", "logit_normal"] = "uniform",
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """CFM loss ``|| model(x_t, t, z_src) - (x1 - x0) ||^2`` averaged over all elements.

    ``x1`` (target) and ``z_src`` (clean source, the conditioning) are ``(N, C, h, w)``.
    """
    x0 = noise_source(z_src, alpha, noise=noise, generator=generator)
    if t is None:
        t = sample_time(x1.shape[0], time_distribution, generator=generator, device=x1.device)
    x_t = interpolate(x0, x1, t)
    prediction = model(x_t, t, z_src)
    return torch.mean((prediction.float() - target_velocity(x0, x1).float()) ** 2)


def gaussian_velocity(
    x_t: torch.Tensor,
    t: torch.Tensor | float,
    cond: torch.Tensor,
    alpha: float,
    residual_mean: torch.Tensor,
    residual_var: torch.Tensor,
) -> torch.Tensor:
    """Exact ``E[x1 - x0 | x_t, cond]`` when the target is ``x1 = cond + m + r``, ``r ~ N(0, v)``.

    With ``x0 = s * cond + sigma * eps`` (``s = sqrt(a)``, ``sigma^2 = 1 - a``) the known part of
    ``x_t`` is removed, ``y = x_t - (1 - t) s cond - t (cond + m) = (1 - t) sigma eps + t r``, and
    the Gaussian posterior gives

        ``E[u | x_t, cond] = (1 - s) cond + m + k(t) y``,
        ``k(t) = (t v - (1 - t) sigma^2) / ((1 - t)^2 sigma^2 + t^2 v)``.

    ``k(0) = -1`` (the velocity is ``cond + m - x0``: denoise the source) and ``k(1) = 1`` (keep
    the detail already on the path). ``x_t``, ``cond``: ``(N, C, h, w)``; ``t``: scalar or ``(N,)``;
    ``residual_mean`` ``m`` and ``residual_var`` ``v``: broadcastable to ``x_t``, e.g. ``(1, C, 1, 1)``.
    """
    if not 0.0 < alpha <= 1.0:
        raise ValueError(f"alpha must be in (0, 1], got {alpha}")
    s, sigma2 = math.sqrt(alpha), 1.0 - alpha
    t = _expand(t, x_t)
    mean = cond + residual_mean
    y = x_t - (1 - t) * s * cond - t * mean
    k = (t * residual_var - (1 - t) * sigma2) / ((1 - t) ** 2 * sigma2 + t**2 * residual_var).clamp_min(1e-12)
    return (1 - s) * cond + residual_mean + k * y
