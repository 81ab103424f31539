"""How a high-res image becomes the kind of low-res input users bring: a generator's output.

Generator outputs are not clean bicubic downsamples. They are a little soft, carry the
generator's grain and its autoencoder's texture, and are often re-saved as JPEG or WebP. A
:class:`Degradation` describes a random mix of exactly those operations, in the order a real
image meets them (the structure of Real-ESRGAN's pipeline, Wang et al. 2021, with one order and
far milder strengths: these are generator outputs, not phone photos):

1. blur (isotropic or anisotropic Gaussian, random sigma and angle), at high resolution;
2. resize to the low-res size with a random kernel (bicubic, bilinear, area, Lanczos; Pillow's
   antialiased resamplers, bicubic with a = -0.5 as MATLAB's ``imresize``);
3. a round trip through an autoencoder (any :class:`flowup.codecs.Codec`: TAEF2, a diffusers
   ``AutoencoderKL`` / ``AutoencoderTiny``), the texture a generator's decoder leaves;
4. additive noise: Gaussian (in colour or in grey) or Poisson; and a generator's own grain, cut from
   the flat areas of its outputs (:mod:`flowup.grain_transplant`);
5. JPEG or WebP re-compression at a random quality;
6. 8-bit quantisation (always: files are 8-bit).

A share of samples (``clean_probability``) gets only step 2 with bicubic and step 6. Every draw
comes from a ``random.Random`` the caller seeds, so a cache or an evaluation is reproducible.
Named profiles (:data:`PROFILES`) are the fixed settings the evaluation harness uses
(``python -m eval run --degrade PROFILE``); training reads a :class:`Degradation` from YAML.
"""

from __future__ import annotations

import io
import math
import random
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

if TYPE_CHECKING:
    from flowup.grain_transplant import GrainBank

__all__ = ["Degradation", "PROFILES", "degrade", "grain_bank", "load_degradation", "pil_downsample", "to_uint8"]

#: Pillow resamplers by name: the resize kernels a degradation draws from.
RESIZE_KERNELS = {
    "bicubic": Image.Resampling.BICUBIC,
    "bilinear": Image.Resampling.BILINEAR,
    "area": Image.Resampling.BOX,
    "lanczos": Image.Resampling.LANCZOS,
}
COMPRESSION_FORMATS = ("jpeg", "webp")

#: A codec round trip ``(1, 3, h, w) -> (1, 3, h, w)`` in [0, 1] (step 3).
RoundTrip = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Degradation:
    """A random mix of degradations; each ``*_probability`` is the chance a sample gets that
    step, each ``(low, high)`` pair a uniform range. Sigmas are in high-res pixels (blur) and in
    8-bit levels (Gaussian noise); ``poisson_scale`` multiplies the photon-noise standard deviation.
    """

    clean_probability: float = 0.15
    blur_probability: float = 0.6
    blur_sigma: tuple[float, float] = (0.2, 1.5)
    anisotropic_probability: float = 0.4
    resize_kernels: tuple[str, ...] = ("bicubic", "bilinear", "area", "lanczos")
    codec_probability: float = 0.3
    noise_probability: float = 0.5
    gaussian_sigma: tuple[float, float] = (1.0, 8.0)
    grey_noise_probability: float = 0.4
    poisson_probability: float = 0.3
    poisson_scale: tuple[float, float] = (0.05, 1.0)
    compression_probability: float = 0.6
    webp_probability: float = 0.3
    quality: tuple[int, int] = (55, 95)
    grain_probability: float = 0.0
    grain_strength: tuple[float, float] = (0.5, 1.5)
    grain_images: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name.endswith("_probability") and not 0.0 <= value <= 1.0:
                raise ValueError(f"degradation {f.name} must be in [0, 1], got {value}")
            if isinstance(value, (tuple, list)) and f.name not in ("resize_kernels", "grain_images"):
                if len(value) != 2 or value[0] > value[1] or value[0] < 0:
                    raise ValueError(f"degradation {f.name} must be a range (low, high) with 0 <= low <= high, got {value}")
        unknown = [k for k in self.resize_kernels if k not in RESIZE_KERNELS]
        if unknown or not self.resize_kernels:
            raise ValueError(f"degradation resize_kernels must be among {tuple(RESIZE_KERNELS)}, got {self.resize_kernels}")
        if not 1 <= self.quality[0] <= self.quality[1] <= 100:
            raise ValueError(f"degradation quality must be a range within [1, 100], got {self.quality}")
        if self.grain_probability > 0 and not self.grain_images:
            raise ValueError("degradation grain_probability > 0 needs grain_images (files or glob patterns of donors)")

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-able settings (stored in a cache's recipe)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


def _fixed(**settings: Any) -> Degradation:
    """A profile with every step off unless named (probabilities 0, no clean share)."""
    off = dict(clean_probability=0.0, blur_probability=0.0, codec_probability=0.0, noise_probability=0.0,
               poisson_probability=0.0, compression_probability=0.0, resize_kernels=("bicubic",))  # fmt: skip
    return Degradation(**{**off, **settings})


#: The evaluation harness's named, fixed profiles (seeded noise). ``generator``: softened,
#: grained and JPEG'd the way generator outputs are (no codec round trip: flowup's own codec
#: would flatter flowup).
PROFILES: dict[str, Degradation] = {
    "clean": _fixed(),
    "jpeg": _fixed(compression_probability=1.0, quality=(75, 75)),
    "noise": _fixed(noise_probability=1.0, gaussian_sigma=(5.0, 5.0)),
    "generator": _fixed(blur_probability=1.0, blur_sigma=(0.8, 0.8), noise_probability=1.0,
                        gaussian_sigma=(3.0, 3.0), grey_noise_probability=0.5,
                        compression_probability=1.0, quality=(85, 85)),  # fmt: skip
}


def load_degradation(spec: str | Path | dict | Degradation | None) -> Degradation | None:
    """A :class:`Degradation` from a profile name, a YAML file, a mapping of its fields, or None."""
    if spec is None or isinstance(spec, Degradation):
        return spec
    if isinstance(spec, dict):
        data = dict(spec)
    elif str(spec) in PROFILES:
        return PROFILES[str(spec)]
    else:
        path = Path(spec)
        if not path.is_file():
            raise ValueError(f"degradation {spec!r} is neither a profile ({', '.join(PROFILES)}) nor a YAML file")
        import yaml

        data = yaml.safe_load(path.read_text()) or {}
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a mapping of degradation settings")
    names = {f.name for f in fields(Degradation)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"unknown degradation settings {unknown}; known: {sorted(names)}")
    return Degradation(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


# ------------------------------------------------------------------------------------------------
# the operations


def to_uint8(image: torch.Tensor) -> np.ndarray:
    """``(3, H, W)`` float in [0, 1] -> ``(H, W, 3)`` uint8 (rounded, as a saved file holds)."""
    return (image.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()


def _from_uint8(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(array)).permute(2, 0, 1).float() / 255


def pil_downsample(image: torch.Tensor, factor: int, kernel: str = "bicubic") -> torch.Tensor:
    """``(3, H, W)`` float -> ``(3, H/factor, W/factor)`` by Pillow's antialiased ``kernel``, in
    float (no 8-bit rounding before the resize; Pillow's float mode, one channel at a time)."""
    _, h, w = image.shape
    if h % factor or w % factor:
        raise ValueError(f"size {h}x{w} is not divisible by the factor {factor}")
    size, resample = (w // factor, h // factor), RESIZE_KERNELS[kernel]
    channels = [Image.fromarray(c.numpy().astype(np.float32)).resize(size, resample) for c in image.clamp(0, 1)]
    return torch.from_numpy(np.stack([np.asarray(c) for c in channels])).clamp(0, 1)


def _gaussian_kernel(sigma_x: float, sigma_y: float, angle: float) -> torch.Tensor:
    """A normalised 2-D Gaussian ``(k, k)``, axes ``sigma_x`` / ``sigma_y`` rotated by ``angle``."""
    radius = max(1, math.ceil(3 * max(sigma_x, sigma_y)))
    ax = torch.arange(-radius, radius + 1, dtype=torch.float64)
    yy, xx = torch.meshgrid(ax, ax, indexing="ij")
    cos, sin = math.cos(angle), math.sin(angle)
    u, v = cos * xx + sin * yy, -sin * xx + cos * yy
    kernel = torch.exp(-0.5 * ((u / sigma_x) ** 2 + (v / sigma_y) ** 2))
    return (kernel / kernel.sum()).float()


def _blur(image: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """``(3, H, W)`` convolved with ``(k, k)``, reflect-padded."""
    r = kernel.shape[-1] // 2
    padded = F.pad(image[None], (r, r, r, r), mode="reflect")
    return F.conv2d(padded, kernel.expand(3, 1, -1, -1), groups=3)[0]


def _compress(image: torch.Tensor, fmt: str, quality: int) -> torch.Tensor:
    """A JPEG (4:2:0, as most savers write) or WebP round trip through Pillow at ``quality``."""
    buffer = io.BytesIO()
    Image.fromarray(to_uint8(image)).save(buffer, format=fmt.upper(), quality=quality)
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        return _from_uint8(np.asarray(decoded.convert("RGB")))


def grain_bank(degradation: Degradation) -> "GrainBank | None":
    """The :class:`~flowup.grain_transplant.GrainBank` of ``degradation``'s donors, or None when it
    draws no grain."""
    if degradation.grain_probability == 0:
        return None
    from flowup.grain_transplant import GrainBank

    return GrainBank(degradation.grain_images)


def degrade(hr: torch.Tensor, factor: int, degradation: Degradation, rng: random.Random,
            round_trip: RoundTrip | None = None, grain: "GrainBank | None" = None) -> torch.Tensor:
    """One degraded low-res input: ``(3, H, W)`` float in [0, 1] -> ``(3, H/factor, W/factor)``
    float holding 8-bit values (``k / 255``).

    ``rng`` supplies every random choice, noise included (so one seed gives one result);
    ``round_trip`` is the autoencoder of step 3 (skipped when None); ``grain`` the donors' grain
    of step 4 (:func:`grain_bank`; needed when the degradation draws grain).
    """
    d = degradation
    if rng.random() < d.clean_probability:
        return _from_uint8(to_uint8(pil_downsample(hr, factor, "bicubic")))
    image = hr
    if rng.random() < d.blur_probability:
        sigma_x = rng.uniform(*d.blur_sigma)
        if rng.random() < d.anisotropic_probability:
            kernel = _gaussian_kernel(sigma_x, rng.uniform(*d.blur_sigma), rng.uniform(0, math.pi))
        else:
            kernel = _gaussian_kernel(sigma_x, sigma_x, 0.0)
        image = _blur(image, kernel)
    image = pil_downsample(image, factor, rng.choice(d.resize_kernels))
    if round_trip is not None and rng.random() < d.codec_probability:
        image = round_trip(image[None])[0].clamp(0, 1)
    if rng.random() < d.noise_probability:
        generator = torch.Generator().manual_seed(rng.getrandbits(63))
        if rng.random() < d.poisson_probability:
            scale = rng.uniform(*d.poisson_scale)
            # Photon (shot) noise: std = scale * sqrt(value / 255), 16 levels on white at scale 1.
            std = scale * (image.clamp_min(0) / 255).sqrt()
            image = image + std * torch.randn(image.shape, generator=generator)
        else:
            sigma = rng.uniform(*d.gaussian_sigma) / 255
            grey = rng.random() < d.grey_noise_probability
            shape = (1, *image.shape[1:]) if grey else image.shape
            image = image + sigma * torch.randn(shape, generator=generator)
        image = image.clamp(0, 1)
    if d.grain_probability > 0 and rng.random() < d.grain_probability:  # no draw otherwise: older recipes keep their streams
        if grain is None:
            raise ValueError("this degradation draws grain: pass degrade(..., grain=grain_bank(degradation))")
        field = grain.sample(image.shape[-2], image.shape[-1], rng)
        image = (image + rng.uniform(*d.grain_strength) * field).clamp(0, 1)
    if rng.random() < d.compression_probability:
        fmt = "webp" if rng.random() < d.webp_probability else "jpeg"
        image = _compress(image, fmt, rng.randint(*d.quality))
    return _from_uint8(to_uint8(image))
