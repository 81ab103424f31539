"""Receptive fields of chains of local layers, and where image-wide layers sit in a chain.

A tile of an image can be run through a network exactly (equal to the untiled result) when the
network is *local*: each output pixel depends on a bounded neighbourhood of the input, its
receptive radius. :func:`sequential_radius` counts that radius for the layers the TAESD family
uses; :func:`split_around_group_norms` finds the image-wide layers (GroupNorm pools statistics over
the whole image) that must run untiled.
"""

from __future__ import annotations

from torch import nn

__all__ = ["sequential_radius", "split_around_group_norms"]


_POINTWISE = (nn.ReLU, nn.SiLU, nn.GELU, nn.LeakyReLU, nn.Tanh, nn.Sigmoid, nn.Identity)


def sequential_radius(module: nn.Module, scale: float = 1.0) -> float | None:
    """Receptive radius of a chain of local layers, in pixels of its input (None: unknown layer).

    Understands ``nn.Sequential``, ``nn.Conv2d``, nearest ``nn.Upsample``, pixel (un)shuffles, pointwise activations
    and residual blocks with ``conv`` and ``skip`` branches (the TAESD family). ``scale`` is the
    size of one current feature pixel in input pixels.
    """
    radius, _ = _walk(module, scale)
    return radius


def _walk(module: nn.Module, scale: float) -> tuple[float | None, float]:
    if isinstance(module, nn.Sequential):
        total = 0.0
        for child in module:
            r, scale = _walk(child, scale)
            if r is None:
                return None, scale
            total += r
        return total, scale
    if isinstance(module, nn.Conv2d):
        radius = max((k // 2) * d for k, d in zip(module.kernel_size, module.dilation)) * scale
        return radius, scale * module.stride[0]
    if isinstance(module, nn.Upsample) and module.mode == "nearest" and module.scale_factor is not None:
        factor = float(module.scale_factor if not isinstance(module.scale_factor, tuple) else module.scale_factor[0])
        return scale, scale / factor  # nearest neighbour shifts by up to one input pixel
    if isinstance(module, nn.PixelUnshuffle):  # a feature pixel covers a block of input pixels
        factor = module.downscale_factor
        return (factor - 1) * scale, scale * factor
    if isinstance(module, nn.PixelShuffle):  # each output pixel reads one input pixel
        return 0.0, scale / module.upscale_factor
    if isinstance(module, _POINTWISE) or "clamp" in type(module).__name__.lower():
        return 0.0, scale
    if isinstance(getattr(module, "conv", None), nn.Sequential) and hasattr(module, "skip"):
        if getattr(module, "pool", None) is not None:
            return None, scale  # image-wide GroupNorm branch: not local
        r_conv, out_scale = _walk(module.conv, scale)
        r_skip, _ = _walk(module.skip, scale)
        if r_conv is None or r_skip is None:
            return None, scale
        return max(r_conv, r_skip), out_scale
    return None, scale


def split_around_group_norms(seq: nn.Sequential, from_end: bool) -> int | None:
    """Index splitting ``seq`` around the modules that hold a GroupNorm (image-wide statistics).

    Encoder (``from_end=False``): index of the first such module; decoder: one past the last.
    Returns None when ``seq`` has no GroupNorm.
    """
    has_gn = [any(isinstance(m, nn.GroupNorm) for m in child.modules()) for child in seq]
    if not any(has_gn):
        return None
    if from_end:
        return max(i for i, flag in enumerate(has_gn) if flag) + 1
    return min(i for i, flag in enumerate(has_gn) if flag)
