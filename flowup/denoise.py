"""The clean <-> faithful control (``denoise``, 0 to 1).

A model that has one ships two networks of the same shape, both from one initialisation: its
``faithful_flow``, trained on clean bicubic pairs (it keeps whatever the input holds, the
generator's grain and compression artefacts included), and its ``flow``, that network fine-tuned
on pairs degraded like generator outputs (:mod:`flowup.degradations`; it removes them and keeps
real texture). ``denoise = s`` runs one network whose weights are ``(1 - s) faithful + s clean``
(weight-space interpolation of two fine-tunes of one init, Wortsman et al. 2022's "model soups"
and WiSE-FT), so any setting costs the same single evaluation as either end.

Back-projection (:mod:`flowup.back_projection`) pins the output to the input; at ``denoise > 0``
it pulls only the input's colours and tones, not its noise: the low-res error is smoothed by a
Gaussian of ``denoise * BACK_PROJECTION_SIGMA`` low-res pixels before it is added back.
"""

from __future__ import annotations

import copy
import json
import math

import torch
from torch import nn

__all__ = ["BACK_PROJECTION_SIGMA", "blend_networks", "check_denoise", "back_projection_sigma", "check_blendable"]

#: The Gaussian sigma (low-res pixels) of the back-projection error at ``denoise = 1``.
BACK_PROJECTION_SIGMA = 1.0


def check_denoise(denoise: object) -> float:
    """``denoise`` as a float in [0, 1]; ValueError naming the value otherwise."""
    if isinstance(denoise, bool) or not isinstance(denoise, (int, float)) or not 0 <= denoise <= 1 or math.isnan(denoise):
        raise ValueError(f"denoise must be a number in [0, 1], got {denoise!r}")
    return float(denoise)


def back_projection_sigma(denoise: float) -> float:
    """Sigma (low-res pixels) of the smoothing of the back-projection error at ``denoise``."""
    return check_denoise(denoise) * BACK_PROJECTION_SIGMA


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
