"""A generator's own grain, cut from its outputs and laid onto clean low-res images.

Gaussian or Poisson noise is not what a generator leaves on flat areas: Stable Diffusion's
autoencoder draws a correlated, coloured speckle a few pixels across. Training pairs whose low-res
side carries synthetic noise taught the flow too little about it (MODEL_CARD.md items 16-18). Noise
injection (Ji et al., "Real-World Super-Resolution via Kernel Estimation and Noise Injection",
CVPRW 2020) takes the noise from real inputs instead: here, from the flat tiles of generator
outputs at their native size.

:class:`GrainBank` reads donor images (8-bit files), keeps the high-pass residual (the image minus
its Gaussian blur of :data:`GRAIN_SIGMA`) of their flat ``tile``-pixel tiles (those whose blurred
luma varies by at most :data:`MAX_STRUCTURE` levels),
and :meth:`GrainBank.sample` lays randomly chosen, flipped and transposed tiles side by side into a
grain field of any size. :func:`flowup.degradations.degrade` adds such a field, scaled, to the
low-res image (a :class:`~flowup.degradations.Degradation`'s ``grain_*`` settings).
"""

from __future__ import annotations

import glob
import random
from pathlib import Path

import numpy as np
import torch
from kornia.filters import gaussian_blur2d
from PIL import Image

__all__ = ["GrainBank", "flat_grain_tiles", "GRAIN_SIGMA", "GRAIN_TILE", "MAX_GRAIN", "MAX_STRUCTURE"]

#: The grain is the donor minus its Gaussian blur of this sigma (pixels): speckle up to ~6 px across.
GRAIN_SIGMA = 2.0
#: Pixels per side of the tiles the grain is cut in and laid out by.
GRAIN_TILE = 32
#: A donor tile is flat when its blurred luma varies by at most this standard deviation (8-bit
#: levels): its residual is then the generator's grain, not the picture's texture.
MAX_STRUCTURE = 3.0
#: Flat tiles whose residual is stronger than this standard deviation (8-bit levels) are left out:
#: specks, stars, a stray edge, not grain (per image, the training generated images' flat tiles
#: hold 0.45-2.04 levels, 10th-90th percentile: `PYTHONPATH=. python docs/scripts/grain_levels.py`).
MAX_GRAIN = 4.0


def flat_grain_tiles(image: torch.Tensor, tile: int = GRAIN_TILE, max_structure: float = MAX_STRUCTURE,
                     sigma: float = GRAIN_SIGMA) -> torch.Tensor:  # fmt: skip
    """The grain of the flat tiles of one image: ``(3, H, W)`` in [0, 1] -> ``(K, 3, tile, tile)``.

    The image's high-pass residual (minus its blur of ``sigma``) on those of its whole ``tile``
    tiles whose blurred luma has a standard deviation of at most ``max_structure`` (8-bit levels):
    sky, skin, walls, smooth paint; residuals above :data:`MAX_GRAIN` are left out; ``K = 0`` where
    no tile is left.
    """
    _, h, w = image.shape
    rows, cols = h // tile, w // tile
    if rows == 0 or cols == 0:
        return image.new_zeros((0, 3, tile, tile))
    x = image[None, :, : rows * tile, : cols * tile]
    radius = max(1, int(3 * sigma + 0.5))
    smooth = gaussian_blur2d(x, (2 * radius + 1, 2 * radius + 1), (sigma, sigma), border_type="reflect")
    residual = (x - smooth)[0]
    luma = (0.299 * smooth[:, 0] + 0.587 * smooth[:, 1] + 0.114 * smooth[:, 2])[0]
    variance = luma.reshape(rows, tile, cols, tile).permute(0, 2, 1, 3).reshape(rows * cols, -1).var(dim=1)
    flat = variance.sqrt() * 255 <= max_structure
    tiles = residual.reshape(3, rows, tile, cols, tile).permute(1, 3, 0, 2, 4).reshape(rows * cols, 3, tile, tile)
    grain = tiles.flatten(1).std(dim=1) * 255 <= MAX_GRAIN
    return tiles[flat & grain]


class GrainBank:
    """Grain tiles cut from donor images (generator outputs at their native size).

    ``patterns``: files or glob patterns of images (any mode Pillow reads; converted to RGB).
    The tiles are kept in float16: ``(K, 3, tile, tile)`` in :attr:`tiles`.
    """

    def __init__(self, patterns: list[str] | tuple[str, ...], tile: int = GRAIN_TILE,
                 max_structure: float = MAX_STRUCTURE, sigma: float = GRAIN_SIGMA) -> None:  # fmt: skip
        paths = sorted({p for pattern in patterns for p in (glob.glob(str(pattern)) or [str(pattern)])})
        missing = [p for p in paths if not Path(p).is_file()]
        if missing or not paths:
            raise ValueError(f"grain donors not found: {missing[:3] or list(patterns)}")
        cut = []
        for path in paths:
            with Image.open(path) as im:
                rgb = torch.from_numpy(np.asarray(im.convert("RGB"), dtype=np.float32) / 255).permute(2, 0, 1)
            cut.append(flat_grain_tiles(rgb, tile, max_structure, sigma).half())
        self.tiles = torch.cat(cut)
        if len(self.tiles) == 0:
            raise ValueError(f"grain donors hold no whole {tile}-pixel tile: {paths[:3]}")
        self.tile = tile
        self.donors = len(paths)

    def sample(self, height: int, width: int, rng: random.Random) -> torch.Tensor:
        """A grain field ``(3, height, width)``: tiles drawn by ``rng``, each flipped / transposed at
        random, laid side by side."""
        t = self.tile
        rows, cols = -(-height // t), -(-width // t)
        picks = []
        for _ in range(rows * cols):
            piece = self.tiles[rng.randrange(len(self.tiles))].float()
            if rng.random() < 0.5:
                piece = piece.flip(-1)
            if rng.random() < 0.5:
                piece = piece.flip(-2)
            if rng.random() < 0.5:
                piece = piece.transpose(-1, -2)
            picks.append(piece)
        field = torch.stack(picks).reshape(rows, cols, 3, t, t).permute(2, 0, 3, 1, 4).reshape(3, rows * t, cols * t)
        return field[:, :height, :width].contiguous()
