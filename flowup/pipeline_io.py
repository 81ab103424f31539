"""What a :class:`~flowup.pipeline.FlowUpPipeline` call takes in and gives back.

Inputs (PIL images of any mode, float tensors, or latents of the pipeline's codec) become
:class:`InputImage` items: RGB ``(3, h, w)`` float32 in [0, 1], the alpha channel and mode kept
aside to be re-attached to the output. Outputs go back as PIL images, tensors or arrays.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import PIL.Image
import torch

from flowup.image_io import pil_to_tensor, tensor_to_pil, upsample_alpha

__all__ = ["OUTPUT_TYPES", "InputImage", "check_detail", "check_tensor_image", "images_from", "latents_from",
           "per_image_generators", "to_output"]  # fmt: skip

OUTPUT_TYPES = ("pil", "pt", "np", "latent")


@dataclass
class InputImage:
    """One input image: ``rgb`` ``(3, H, W)`` float in [0, 1], optional ``alpha`` ``(1, H, W)``,
    the PIL ``mode`` it came in, and ``latent`` ``(C, h, w)`` when the input was a latent kept for
    the bilinear source."""

    rgb: torch.Tensor
    alpha: torch.Tensor | None = None
    mode: str = "RGB"
    latent: torch.Tensor | None = None


def images_from(image: Any) -> list[InputImage]:
    """A PIL image, a list of them, or float tensors ``(N, 3, h, w)`` / ``(3, h, w)`` in [0, 1]
    (1 channel: greyscale) -> :class:`InputImage` items; ``ValueError`` for anything else."""
    if isinstance(image, torch.Tensor):
        image = list(image) if image.ndim == 4 else [image]
    elif isinstance(image, PIL.Image.Image):
        image = [image]
    if not isinstance(image, (list, tuple)) or not image:
        raise ValueError("image must be a PIL image, a list of them, or a float tensor (N, 3, h, w) in [0, 1]")
    items = []
    for k, img in enumerate(image):
        if isinstance(img, PIL.Image.Image):
            loaded = pil_to_tensor(img)
            items.append(InputImage(loaded.rgb, loaded.alpha, loaded.mode))
        elif isinstance(img, torch.Tensor):
            items.append(InputImage(check_tensor_image(img, k)))
        else:
            raise ValueError(f"image {k}: expected a PIL image or a tensor, got {type(img).__name__}")
    return items


def latents_from(latents: Any, channels: int, decode: Callable[[torch.Tensor], torch.Tensor],
                 keep_latents: bool) -> list[InputImage]:  # fmt: skip
    """Latents ``(N, channels, h, w)`` -> items of their decoded images (``decode``), keeping the
    latents themselves when ``keep_latents`` (the bilinear source)."""
    if not isinstance(latents, torch.Tensor) or latents.ndim != 4 or latents.shape[1] != channels:
        shape = tuple(latents.shape) if isinstance(latents, torch.Tensor) else type(latents).__name__
        raise ValueError(f"latents must be a tensor (N, {channels}, h, w) of this codec, got {shape}")
    rgb = decode(latents).float()
    return [InputImage(rgb=rgb[i], latent=latents[i].float() if keep_latents else None) for i in range(len(rgb))]


def check_tensor_image(image: torch.Tensor, index: int) -> torch.Tensor:
    """``(C, h, w)`` float in [0, 1] with C in (1, 3) -> ``(3, h, w)`` float32."""
    if image.ndim != 3 or image.shape[0] not in (1, 3):
        raise ValueError(f"image {index}: expected a tensor (3, h, w) or (N, 3, h, w), got shape {tuple(image.shape)}")
    if not image.is_floating_point():
        raise ValueError(f"image {index}: expected a float tensor in [0, 1], got {image.dtype}")
    low, high = float(image.min()), float(image.max())
    if low < -1e-3 or high > 1 + 1e-3:
        raise ValueError(f"image {index}: values must be in [0, 1], got [{low:.3g}, {high:.3g}]")
    return image.float().clamp(0, 1).expand(3, -1, -1)


def check_detail(detail: Any, stages: int) -> list[float]:
    """``detail`` (one number in [0, 2] for every stage, or a sequence with one per stage) -> one
    float per stage."""
    values = list(detail) if isinstance(detail, (list, tuple)) else [detail]
    for value in values:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 2:
            raise ValueError(f"detail must be a number in [0, 2] or one per stage, got {detail!r}")
    if len(values) == 1:
        return [float(values[0])] * stages
    if len(values) != stages:
        raise ValueError(f"detail has {len(values)} values but this scale runs {stages} stage{'s' if stages > 1 else ''}")
    return [float(v) for v in values]


def per_image_generators(generator: Any, count: int) -> list[torch.Generator | None]:
    """One generator per image; a single generator is shared (drawn from in image order)."""
    if isinstance(generator, (list, tuple)):
        if len(generator) != count:
            raise ValueError(f"got {len(generator)} generators for {count} images")
        return list(generator)
    return [generator] * count


def to_output(rgbs: list[torch.Tensor], latents: list[torch.Tensor], items: list[InputImage], scale: int,
              output_type: str) -> Any:  # fmt: skip
    """Per-image results ``(3, H, W)`` and latents -> ``output_type`` (stacked when all one size)."""
    same_size = len({tuple(r.shape) for r in rgbs}) == 1
    if output_type == "latent":
        return torch.stack(latents) if same_size else latents
    if output_type == "pil":
        return [
            tensor_to_pil(rgb, upsample_alpha(item.alpha, scale) if item.alpha is not None else None, item.mode)
            for rgb, item in zip(rgbs, items)
        ]
    if output_type == "pt":
        return torch.stack(rgbs) if same_size else rgbs
    arrays = [r.permute(1, 2, 0).cpu().numpy() for r in rgbs]
    return np.stack(arrays) if same_size else arrays
