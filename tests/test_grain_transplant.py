"""Grain transplant (flowup.grain_transplant): a generator's grain cut from flat tiles, laid onto images."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from PIL import Image

from flowup.degradations import Degradation, degrade, grain_bank, load_degradation
from flowup.grain_transplant import GRAIN_TILE, GrainBank, flat_grain_tiles

T = GRAIN_TILE


def _donor(seed: int = 0) -> torch.Tensor:
    """``(3, 2T, 4T)``: flat grey with grain of std 2 levels, the last column of tiles striped."""
    g = torch.Generator().manual_seed(seed)
    image = torch.full((3, 2 * T, 4 * T), 0.5) + 2 / 255 * torch.randn(3, 2 * T, 4 * T, generator=g)
    image[:, :, 3 * T :] = 0.2 + 0.6 * (torch.arange(T) // 3 % 2).float()  # stripes 3 px wide: texture
    return image


def _save(image: torch.Tensor, path) -> None:
    Image.fromarray((image.clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)).save(path)


def test_only_flat_tiles_give_grain_and_it_keeps_its_strength():
    tiles = flat_grain_tiles(_donor())
    assert tiles.shape == (4, 3, T, T)  # the first two columns: not the stripes, nor the tiles the blur sees them from
    assert 1.2 < tiles.std().item() * 255 < 2.2  # most of the 2-level grain is above the blur's band
    assert tiles.mean(dim=(1, 2, 3)).abs().max() < 0.3 / 255  # zero-mean: no tone moves with it
    assert flat_grain_tiles(torch.rand(3, T - 1, 4 * T)).shape[0] == 0  # smaller than a tile: none


def test_a_bank_samples_fields_of_its_own_tiles(tmp_path):
    for k in range(2):
        _save(_donor(k), tmp_path / f"d{k}.png")
    bank = GrainBank([str(tmp_path / "*.png")])
    assert bank.donors == 2 and bank.tiles.shape[1:] == (3, T, T) and len(bank.tiles) == 8
    field = bank.sample(T + 5, 2 * T, random.Random(3))
    assert field.shape == (3, T + 5, 2 * T)
    assert torch.equal(field, bank.sample(T + 5, 2 * T, random.Random(3)))
    first = field[:, :T, :T]  # a bank tile, flipped or transposed
    variants = [v for tile in bank.tiles.float() for t in (tile, tile.transpose(-1, -2))
                for v in (t, t.flip(-1), t.flip(-2), t.flip(-1).flip(-2))]  # fmt: skip
    assert any(torch.equal(first, v) for v in variants)
    with pytest.raises(ValueError, match="not found"):
        GrainBank([str(tmp_path / "missing.png")])


def test_degrade_adds_the_scaled_field_and_needs_its_bank(tmp_path):
    _save(_donor(), tmp_path / "d.png")
    settings = dict(clean_probability=0, blur_probability=0, codec_probability=0, noise_probability=0,
                    compression_probability=0, resize_kernels=("bicubic",))  # fmt: skip
    grainy = Degradation(**settings, grain_probability=1.0, grain_strength=(1.5, 1.5), grain_images=(str(tmp_path / "d.png"),))
    bank = grain_bank(grainy)
    hr = torch.full((3, 2 * T, 2 * T), 0.5)
    clean = degrade(hr, 2, Degradation(**settings), random.Random(0))
    out = degrade(hr, 2, grainy, random.Random(0), grain=bank)
    assert torch.equal(out, degrade(hr, 2, grainy, random.Random(0), grain=bank))
    added = (out - clean) * 255
    assert 1.5 < added.std() < 3.5  # 1.5 x the donor's grain, rounded to 8 bits
    with pytest.raises(ValueError, match="grain_bank"):
        degrade(hr, 2, grainy, random.Random(0))
    with pytest.raises(ValueError, match="grain_images"):
        Degradation(grain_probability=0.5)
    assert grain_bank(Degradation()) is None
    assert load_degradation(grainy.as_dict()) == grainy
