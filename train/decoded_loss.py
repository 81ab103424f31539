"""A loss on the *decoded* image of the shipped sampler's output, beside the velocity loss.

The velocity loss (:func:`flowup.flow.flow_matching_loss`) is a mean squared error on latents. A
generator's grain is a few pixels across: a small part of that error, while the codec's decoder
turns small latent differences into visible texture, so networks trained on it alone keep (and
enlarge) the grain of their input (MODEL_CARD.md, items 21-22). This term scores what users see:
the default sampler's one Euler step from ``t = 0``,

    ``x1_hat = x0 + v(x0, 0, cond)``,

decoded by the frozen codec and compared in pixels with the decoded target latent ``D(z_hr)``
(the codec's ceiling, so the term asks for nothing the codec cannot draw): an L1 distance, plus
optionally an L1 distance between the two images' Sobel gradients (``edge_weight``), which
penalises both speckle on flat areas (gradients the target lacks) and soft edges (gradients
weaker than the target's).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from flowup.codecs import Codec
from flowup.flow import VelocityModel, noise_source
from flowup.solver import sample

__all__ = ["decoded_image_loss", "one_step_prediction"]


def one_step_prediction(
    model: VelocityModel,
    z_src: torch.Tensor,
    alpha: float,
    noise: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """The default sampler's output, one Euler step of :func:`flowup.solver.sample` from the noised
    source ``x0``, i.e. ``x0 + v(x0, 0, z_src)``: ``(N, C, h, w)`` -> same (differentiable in the
    model's parameters)."""
    x0 = noise_source(z_src, alpha, noise=noise, generator=generator)
    return sample(lambda x, t: model(x, t, z_src), x0, num_steps=1, method="euler").x1


def decoded_image_loss(
    codec: Codec,
    prediction: torch.Tensor,
    target: torch.Tensor,
    edge_weight: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(L1, edge L1)`` between ``codec.decode(prediction)`` and ``codec.decode(target)``.

    ``prediction``, ``target``: latents ``(N, C, h, w)``; gradients flow through the (frozen)
    decoder into ``prediction`` only. The edge term is the L1 distance between the images' Sobel
    gradients (kornia), computed only when ``edge_weight > 0`` (otherwise a zero tensor); the
    caller weighs and adds the two.
    """
    if prediction.shape != target.shape:
        raise ValueError(f"prediction {tuple(prediction.shape)} and target {tuple(target.shape)} differ in shape")
    with torch.no_grad():
        target_image = codec.decode(target).float()
    image = codec.decode(prediction).float()
    l1 = F.l1_loss(image, target_image)
    if edge_weight <= 0:
        return l1, torch.zeros((), device=l1.device)
    from kornia.filters import spatial_gradient

    edge = F.l1_loss(spatial_gradient(image, mode="sobel"), spatial_gradient(target_image, mode="sobel"))
    return l1, edge
