"""Closed-form tests of the flow-matching path (flowup.flow)."""

import math

import pytest
import torch

from flowup.flow import (
    flow_matching_loss,
    gaussian_velocity,
    interpolate,
    noise_source,
    sample_time,
    target_velocity,
)


def test_interpolant_endpoints_and_midpoint():
    x0, x1 = torch.randn(3, 4, 5, 5), torch.randn(3, 4, 5, 5)
    assert torch.equal(interpolate(x0, x1, 0.0), x0)
    assert torch.allclose(interpolate(x0, x1, 1.0), x1)
    assert torch.allclose(interpolate(x0, x1, 0.5), (x0 + x1) / 2)
    t = torch.tensor([0.0, 0.25, 1.0])
    xt = interpolate(x0, x1, t)
    assert torch.allclose(xt[1], 0.75 * x0[1] + 0.25 * x1[1])
    assert torch.allclose(xt[2], x1[2])


def test_velocity_is_time_derivative_of_path():
    x0, x1 = torch.randn(2, 3, 4, 4, dtype=torch.float64), torch.randn(2, 3, 4, 4, dtype=torch.float64)
    t, h = 0.3, 1e-6
    finite_difference = (interpolate(x0, x1, t + h) - interpolate(x0, x1, t - h)) / (2 * h)
    assert torch.allclose(finite_difference, target_velocity(x0, x1), atol=1e-6)


def test_noise_source_closed_form_and_statistics():
    z = torch.full((1, 2, 64, 64), 2.0)
    eps = torch.randn_like(z)
    a = 0.81
    assert torch.allclose(noise_source(z, a, noise=eps), 0.9 * z + math.sqrt(0.19) * eps)
    assert torch.equal(noise_source(z, 1.0), z)
    x0 = noise_source(z, a, generator=torch.Generator().manual_seed(0))
    assert x0.mean().item() == pytest.approx(1.8, abs=0.02)
    assert x0.std().item() == pytest.approx(math.sqrt(0.19), rel=0.03)
    with pytest.raises(ValueError):
        noise_source(z, 0.0)


def test_time_samplers_range_and_shape():
    g = torch.Generator().manual_seed(0)
    for dist in ("uniform", "logit_normal"):
        t = sample_time(10_000, dist, generator=g)
        assert t.shape == (10_000,) and t.min() >= 0 and t.max() <= 1
        assert t.mean().item() == pytest.approx(0.5, abs=0.02)
    assert sample_time(10_000, "logit_normal", generator=g).std() < sample_time(10_000, "uniform", generator=g).std()
    with pytest.raises(ValueError):
        sample_time(3, "beta")


def test_loss_is_zero_for_oracle_and_positive_otherwise():
    x1, z = torch.randn(4, 3, 8, 8), torch.randn(4, 3, 8, 8)
    noise = torch.randn_like(z)
    x0 = noise_source(z, 0.9, noise=noise)
    oracle = lambda x_t, t, cond: x1 - x0  # noqa: E731
    assert flow_matching_loss(oracle, x1, z, 0.9, noise=noise).item() == pytest.approx(0.0, abs=1e-10)
    zero = lambda x_t, t, cond: torch.zeros_like(x_t)  # noqa: E731
    expected = ((x1 - x0) ** 2).mean().item()
    assert flow_matching_loss(zero, x1, z, 0.9, noise=noise).item() == pytest.approx(expected, rel=1e-5)


def test_loss_passes_path_point_time_and_condition_to_model():
    x1, z = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    noise, t = torch.randn_like(z), torch.tensor([0.2, 0.7])
    seen = {}

    def model(x_t, t_in, cond):
        seen.update(x_t=x_t, t=t_in, cond=cond)
        return torch.zeros_like(x_t)

    flow_matching_loss(model, x1, z, 0.5, t=t, noise=noise)
    x0 = noise_source(z, 0.5, noise=noise)
    assert torch.allclose(seen["x_t"], interpolate(x0, x1, t))
    assert torch.equal(seen["t"], t) and torch.equal(seen["cond"], z)


def _gaussian_toy(n: int, alpha: float, seed: int = 0):
    """Per-channel toy: ``x1 = cond + m + r``, ``r ~ N(0, v)``; source ``x0 = sqrt(a) cond + sqrt(1-a) eps``."""
    g = torch.Generator().manual_seed(seed)
    m, v = torch.tensor([0.3, -0.2]).view(1, 2, 1, 1), torch.tensor([0.05, 0.4]).view(1, 2, 1, 1)
    cond = torch.randn(n, 2, 1, 1, generator=g)
    x1 = cond + m + v.sqrt() * torch.randn(n, 2, 1, 1, generator=g)
    x0 = noise_source(cond, alpha, generator=g)
    return cond, x0, x1, m, v


@pytest.mark.parametrize("t", [0.0, 0.3, 0.7, 1.0])
def test_gaussian_velocity_is_the_posterior_mean(t):
    # Orthogonality principle: the error of the (linear-Gaussian) posterior mean has zero mean and
    # is uncorrelated with everything it conditions on (x_t and cond).
    alpha = 0.9
    cond, x0, x1, m, v = _gaussian_toy(200_000, alpha)
    x_t = interpolate(x0, x1, t)
    error = target_velocity(x0, x1) - gaussian_velocity(x_t, t, cond, alpha, m, v)
    assert error.mean(0).abs().max() < 0.01
    for known in (x_t, cond):
        centred = known - known.mean(0)
        assert (error * centred).mean(0).abs().max() < 0.01
    # Wrong statistics do worse (the posterior mean is the MSE minimiser); at t = 1 the path
    # point is the target itself, so the statistics no longer matter.
    worse = target_velocity(x0, x1) - gaussian_velocity(x_t, t, cond, alpha, m + 0.2, 3 * v)
    if t < 1:
        assert (worse**2).mean() > (error**2).mean() + 1e-3


def test_gaussian_velocity_endpoints():
    alpha = 0.81
    cond, x0, x1, m, v = _gaussian_toy(8, alpha)
    # t = 0: denoise the source onto cond + m.  t = 1: keep the detail, u = x1 - sqrt(a) cond.
    assert torch.allclose(gaussian_velocity(x0, 0.0, cond, alpha, m, v), cond + m - x0, atol=1e-6)
    assert torch.allclose(gaussian_velocity(x1, 1.0, cond, alpha, m, v), x1 - 0.9 * cond, atol=1e-6)


def test_gaussian_velocity_transports_source_to_target_distribution():
    # Integrating the exact marginal velocity carries p(x0 | cond) onto p(x1 | cond) = N(cond + m, v).
    alpha = 0.9
    cond, x0, _, m, v = _gaussian_toy(100_000, alpha, seed=1)
    x, steps = x0, 200
    for i in range(steps):
        x = x + gaussian_velocity(x, i / steps, cond, alpha, m, v) / steps
    residual = x - cond - m
    assert residual.mean(0).abs().max() < 0.01
    assert torch.allclose(residual.var(0), v[0], rtol=0.05)
