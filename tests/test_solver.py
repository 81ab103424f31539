"""Solvers on analytic ODEs, NFE counts (flowup.solver)."""

import math

import pytest
import torch

from flowup.solver import nfe_per_step, sample


def test_one_euler_step_is_exact_for_the_oracle_velocity():
    x0, x1 = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    result = sample(lambda x, t: x1 - x0, x0, num_steps=1, method="euler")
    assert torch.allclose(result.x1, x1, atol=1e-6) and result.nfe == 1


@pytest.mark.parametrize("method,steps,tol", [("euler", 200, 1e-2), ("midpoint", 50, 1e-3), ("rk4", 10, 1e-5)])
def test_fixed_step_solvers_on_exponential_growth(method, steps, tol):
    # dx/dt = x  ->  x(1) = e * x(0)
    x0 = torch.ones(1, 1, 2, 2, dtype=torch.float64)
    result = sample(lambda x, t: x, x0, num_steps=steps, method=method)
    assert torch.allclose(result.x1, x0 * math.e, rtol=tol)
    assert result.nfe == steps * nfe_per_step(method)


def test_convergence_order():
    # Error ratio when halving the step: ~2 for Euler (order 1), ~16 for RK4 (order 4).
    x0 = torch.ones(1, dtype=torch.float64)

    def error(method, n):
        return abs(sample(lambda x, t: x, x0, num_steps=n, method=method).x1.item() - math.e)

    assert 1.8 < error("euler", 20) / error("euler", 40) < 2.2
    assert 3.6 < error("midpoint", 20) / error("midpoint", 40) < 4.4
    assert 14 < error("rk4", 10) / error("rk4", 20) < 18


def test_time_dependent_velocity_uses_t():
    # dx/dt = 2t -> x(1) = x(0) + 1; midpoint is exact for linear-in-t right-hand sides.
    x0 = torch.zeros(3)
    result = sample(lambda x, t: 2 * t.view(-1, *([1] * (x.ndim - 1))).expand_as(x), x0[None], 3, "midpoint")
    assert torch.allclose(result.x1, torch.ones(1, 3), atol=1e-6)


def test_dopri5_is_accurate_and_counts_evaluations():
    x0 = torch.ones(1, 2, dtype=torch.float64)
    calls = []
    result = sample(lambda x, t: -2 * x, x0, method="dopri5", atol=1e-8, rtol=1e-8, on_evaluation=lambda n, t: calls.append(t))
    assert torch.allclose(result.x1, x0 * math.exp(-2), rtol=1e-6)
    assert result.nfe == len(calls) and result.nfe > 6


def test_fixed_grid_times_and_callback():
    times = []
    sample(lambda x, t: torch.zeros_like(x), torch.zeros(1, 1), num_steps=4, method="euler",
           on_evaluation=lambda n, t: times.append(round(t, 6)))
    assert times == [0.0, 0.25, 0.5, 0.75]


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown solver"):
        sample(lambda x, t: x, torch.zeros(1, 1), 2, "heun3")
    with pytest.raises(ValueError, match="num_steps"):
        sample(lambda x, t: x, torch.zeros(1, 1), 0, "euler")
