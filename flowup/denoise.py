"""The clean <-> faithful control (``denoise``, 0 to 1).

Generator outputs carry grain and JPEG / WebP artefacts that the flow, trained to keep and sharpen
what its input holds, amplifies (docs/upscale.md, "Real inputs"). ``denoise = s`` removes them
before the flow sees them: the low-res input is smoothed by an edge-preserving bilateral filter
(kornia's ``bilateral_blur``: 5x5 window, spatial sigma 1 low-res pixel, colour sigma
``s * MAX_COLOR_SIGMA`` in RGB distance), which flattens noise on smooth areas and keeps edges; the
whole x2 stage, back-projection included, then runs on the filtered input, so back-projection
pulls the output to the input's colours, tones and edges but not to its noise. ``0`` is the
faithful setting (no filter: exactly the model without the control).

A model may also ship a second network for this control: a ``faithful_flow`` beside its ``flow``
(the same network fine-tuned on degraded pairs, ``python -m train export --faithful-of``). Then
``denoise = s`` also runs one network whose weights are ``(1 - s) faithful + s clean`` (weight-space
interpolation of two fine-tunes of one init, as WiSE-FT, Wortsman et al. 2022): any setting costs
one evaluation. The shipped model (v0.5) has one: its ``faithful_flow`` is v0.4.1's network and its
``flow`` the fine-tune (MODEL_CARD.md, item 18).
"""

from __future__ import annotations

import copy
import json
import math

import torch
from torch import nn

__all__ = ["MAX_COLOR_SIGMA", "check_blendable", "check_denoise", "blend_networks", "prefilter"]

#: The bilateral filter's colour sigma at ``denoise = 1`` (RGB distance, values in [0, 1]).
MAX_COLOR_SIGMA = 0.15
#: Its window (low-res pixels) and spatial sigma.
WINDOW, SPACE_SIGMA = 5, 1.0


def check_denoise(denoise: object) -> float:
    """``denoise`` as a float in [0, 1]; ValueError naming the value otherwise."""
    if isinstance(denoise, bool) or not isinstance(denoise, (int, float)) or not 0 <= denoise <= 1 or math.isnan(denoise):
        raise ValueError(f"denoise must be a number in [0, 1], got {denoise!r}")
    return float(denoise)


def prefilter(images: torch.Tensor, denoise: float) -> torch.Tensor:
    """The edge-preserving smoothing of ``denoise``: ``(N, 3, h, w)`` float in [0, 1] -> same
    (``denoise = 0`` returns ``images`` itself)."""
    denoise = check_denoise(denoise)
    if denoise == 0.0:
        return images
    from kornia.filters import bilateral_blur

    border = "reflect" if min(images.shape[-2:]) > WINDOW // 2 else "replicate"  # reflection needs 3 pixels
    return bilateral_blur(images, WINDOW, denoise * MAX_COLOR_SIGMA, (SPACE_SIGMA, SPACE_SIGMA), border_type=border,
                          color_distance_type="l2").clamp(0, 1)  # fmt: skip


def check_blendable(faithful: nn.Module, clean: nn.Module) -> None:
    """Raise ValueError unless the two networks have the same class, config and parameter shapes."""
    if type(faithful) is not type(clean):
        raise ValueError(f"the faithful flow is a {type(faithful).__name__}, the flow a {type(clean).__name__}")
    def config(network: nn.Module) -> dict:  # tuples and lists alike (a saved config holds lists)
        return json.loads(json.dumps(dict(getattr(network, "config", {})), default=str))

    config_a, config_b = config(faithful), config(clean)
    differ = sorted(k for k in set(config_a) | set(config_b) if not k.startswith("_") and config_a.get(k) != config_b.get(k))
    if differ:
        raise ValueError(f"the faithful flow's config differs from the flow's in {', '.join(differ)}")
    shapes_a = {k: tuple(v.shape) for k, v in faithful.state_dict().items()}
    shapes_b = {k: tuple(v.shape) for k, v in clean.state_dict().items()}
    if shapes_a != shapes_b:
        raise ValueError("the faithful flow's weights do not match the flow's in names or shapes")


@torch.no_grad()
def blend_networks(faithful: nn.Module, clean: nn.Module, denoise: float) -> nn.Module:
    """A copy of ``clean`` whose floating-point weights are ``lerp(faithful, clean, denoise)``.

    ``denoise`` 0 or 1 returns that network itself (no copy)."""
    denoise = check_denoise(denoise)
    if denoise == 1.0:
        return clean
    if denoise == 0.0:
        return faithful
    blended = copy.deepcopy(clean)
    faithful_state = faithful.state_dict()
    for name, value in blended.state_dict().items():
        if value.is_floating_point():
            value.copy_(torch.lerp(faithful_state[name].to(value), value, denoise))
    return blended.eval()
