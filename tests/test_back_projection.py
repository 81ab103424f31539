"""Low-res consistency by back-projection (flowup/back_projection.py) and its pipeline option."""

import json

import pytest
import torch

from flowup.back_projection import ROUND_TRIP_RADIUS, _axis_matrix, back_project, low_res_error, low_res_round_trip
from flowup.resample import downsample, upsample


def _smooth(n: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    """Images in [0.2, 0.8] (so the final clamp never binds), ``(n, 3, h, w)``."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 3, max(2, h // 4), max(2, w // 4), generator=g)
    return 0.2 + 0.6 * torch.nn.functional.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)


def test_zero_steps_is_identity_and_bad_arguments_raise():
    sr, lr = torch.rand(1, 3, 16, 20), torch.rand(1, 3, 8, 10)
    assert back_project(sr, lr, 0) is sr
    with pytest.raises(ValueError, match=">= 0"):
        back_project(sr, lr, -1)
    with pytest.raises(ValueError, match="integer upscale"):
        back_project(sr, torch.rand(1, 3, 7, 10), 1)
    with pytest.raises(ValueError, match="integer upscale"):
        back_project(sr, torch.rand(1, 3, 8, 5), 1)  # x2 in height, x4 in width


@pytest.mark.parametrize("factor", [2, 4])
def test_converges_to_a_consistent_image(factor):
    """Each step shrinks ``lr - D(sr)``; many steps make ``D(sr) = lr`` to within float error."""
    lr = _smooth(2, 12, 18, seed=1)
    sr = _smooth(2, 12 * factor, 18 * factor, seed=2)  # an unrelated image: large error at first
    errors = [low_res_error(back_project(sr, lr, k), lr).abs().max().item() for k in (0, 1, 3, 30)]
    assert errors[0] > 0.1
    assert errors[0] > errors[1] > errors[2] > errors[3] and errors[3] < 1e-3


@pytest.mark.parametrize("factor", [2, 3, 4])
@pytest.mark.parametrize("size", [(1, 9), (2, 2), (5, 7), (13, 12), (37, 130)])
def test_low_res_round_trip_is_upsample_then_downsample(factor, size):
    """D(U(x)) on the low-res grid equals the two resampling functions at full resolution, to float
    rounding (the kernels' own weights move by float32 rounding along an axis at odd factors)."""
    x = torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(5))
    expected = downsample(upsample(x, factor, clamp=False), factor, clamp=False)
    torch.testing.assert_close(low_res_round_trip(x, factor), expected, atol=2e-6 if factor != 3 else 5e-5, rtol=0)


@pytest.mark.parametrize("factor", [2, 4])
def test_round_trip_is_a_7_tap_filter_away_from_three_end_pixels(factor):
    """What the low-res recursion relies on: along an axis, every pixel but the 3 at each end reads
    the same 7 taps (ROUND_TRIP_RADIUS 3 each side), and no pixel reads further."""
    r, n = ROUND_TRIP_RADIUS, 64
    matrix = _axis_matrix(n, factor)
    rows, cols = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
    assert matrix[(rows - cols).abs() > r].abs().max() < 1e-12
    interior = torch.stack([matrix[i, i - r : i + r + 1] for i in range(r, n - r)])
    assert (interior - interior[0]).abs().max() < 1e-12
    assert (matrix[0, : 2 * r + 1] - interior[0]).abs().max() > 1e-3  # the ends differ


@pytest.mark.parametrize("steps", [1, 2, 5])
def test_back_project_equals_the_step_by_step_iteration(steps):
    """The low-res recursion gives what ``sr <- sr + U(lr - D(sr))`` step by step gives."""
    lr, sr = _smooth(2, 24, 20, seed=6), _smooth(2, 48, 40, seed=7) + 0.01 * torch.randn(2, 3, 48, 40)
    expected = sr
    for _ in range(steps):
        expected = expected + upsample(low_res_error(expected, lr), 2, clamp=False)
    torch.testing.assert_close(back_project(sr, lr, steps), expected.clamp(0, 1), atol=2e-6, rtol=0)


def test_keeps_detail_the_downsampling_cannot_see():
    """A Nyquist checkerboard is (nearly) invisible to D: back-projection leaves it in place."""
    lr = _smooth(1, 16, 16, seed=3)
    base = upsample(lr, 2)
    y, x = torch.meshgrid(torch.arange(32), torch.arange(32), indexing="ij")
    checker = 0.05 * (-1.0) ** (x + y)
    assert downsample(0.5 + checker.expand(1, 3, 32, 32), 2).sub(0.5).abs().max() < 0.01  # D(checker) ~ 0
    projected = back_project(base + checker, lr, 5) - back_project(base, lr, 5)
    assert torch.allclose(projected[0], checker.expand(3, 32, 32), atol=0.01)


def test_colour_shift_is_removed():
    """A uniform colour offset lives in D's range: back-projection takes it out."""
    lr = _smooth(1, 16, 16, seed=4)
    shifted = (upsample(lr, 2) + torch.tensor([0.0, -0.03, 0.02]).view(1, 3, 1, 1)).clamp(0, 1)
    before = (shifted - upsample(lr, 2)).mean(dim=(0, 2, 3)).abs().max()
    after = (back_project(shifted, lr, 5) - upsample(lr, 2)).mean(dim=(0, 2, 3)).abs().max()
    assert before > 0.019 and after < 0.002


def test_pipeline_option_config_and_round_trip(tiny_pipeline, tmp_path):
    from flowup import FlowUpPipeline
    from conftest import make_tiny_pipeline

    lr = _smooth(1, 24, 32, seed=5)

    def run(pipe, **kwargs):
        return pipe(image=lr, generator=torch.Generator().manual_seed(0), output_type="pt", **kwargs).images

    plain = run(tiny_pipeline)  # the fixture's config: no back-projection
    assert torch.equal(plain, run(tiny_pipeline, back_projection_steps=0))
    projected = run(tiny_pipeline, back_projection_steps=5)
    assert low_res_error(projected, lr).abs().mean() < 0.5 * low_res_error(plain, lr).abs().mean()
    with pytest.raises(ValueError, match="back_projection_steps"):
        run(tiny_pipeline, back_projection_steps=-1)

    pipe = make_tiny_pipeline(default_back_projection_steps=5)
    assert torch.equal(run(pipe), projected)  # the config's default is used
    pipe.save_pretrained(tmp_path / "bp", save_codec=True)
    assert json.loads((tmp_path / "bp" / "model_index.json").read_text())["default_back_projection_steps"] == 5
    loaded = FlowUpPipeline.from_pretrained(tmp_path / "bp", runtime="torch")  # bit-exact: same engine
    loaded.set_progress_bar_config(disable=True)
    assert torch.equal(run(loaded), projected)
    with pytest.raises(ValueError, match="default_back_projection_steps"):
        make_tiny_pipeline(default_back_projection_steps=-2)
