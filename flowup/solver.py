"""ODE integration of a velocity model from t = 0 (source) to t = 1 (target).

This is the only module that imports torchdiffeq; it adapts flowup's ``model(x_t, t, cond)``
convention to torchdiffeq's ``f(t, x)``. ``num_steps`` counts intervals: the fixed grid is
``linspace(0, 1, num_steps + 1)``. Every call reports NFE, the number of model evaluations per
sample (adaptive solvers included).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torchdiffeq import odeint

__all__ = ["FIXED_STEP_METHODS", "ADAPTIVE_METHODS", "SolveResult", "sample", "nfe_per_step"]

FIXED_STEP_METHODS = ("euler", "midpoint", "rk4")
ADAPTIVE_METHODS = ("dopri5",)
_EVALS_PER_STEP = {"euler": 1, "midpoint": 2, "rk4": 4}

# velocity(x_t (N, C, h, w), t (N,)) -> (N, C, h, w); the conditioning is bound by the caller.
Velocity = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class SolveResult:
    """``x1``: the state at t = 1, ``(N, C, h, w)``; ``nfe``: model evaluations per sample."""

    x1: torch.Tensor
    nfe: int


def nfe_per_step(method: str) -> int:
    """Model evaluations per step of a fixed-step method."""
    if method not in _EVALS_PER_STEP:
        raise ValueError(f"{method!r} is not a fixed-step method {FIXED_STEP_METHODS}")
    return _EVALS_PER_STEP[method]


def sample(
    velocity: Velocity,
    x0: torch.Tensor,
    num_steps: int = 1,
    method: str = "euler",
    atol: float = 1e-4,
    rtol: float = 1e-4,
    on_evaluation: Callable[[int, float], None] | None = None,
) -> SolveResult:
    """Integrate ``dx/dt = velocity(x, t)`` from ``x(0) = x0`` to t = 1.

    - ``method``: ``euler``, ``midpoint``, ``rk4`` (fixed grid of ``num_steps`` intervals) or
      ``dopri5`` (adaptive, ``atol`` / ``rtol``; ``num_steps`` ignored).
    - ``on_evaluation(nfe, t)``: called after every model evaluation (progress bars).
    """
    if method not in FIXED_STEP_METHODS + ADAPTIVE_METHODS:
        raise ValueError(f"unknown solver {method!r}; choose one of {FIXED_STEP_METHODS + ADAPTIVE_METHODS}")
    if method in FIXED_STEP_METHODS and (not isinstance(num_steps, int) or num_steps < 1):
        raise ValueError(f"num_steps must be a positive integer, got {num_steps!r}")
    nfe = 0

    def f(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        nonlocal nfe
        nfe += 1
        v = velocity(x, t.to(x.dtype).expand(x.shape[0]))
        if on_evaluation is not None:
            on_evaluation(nfe, float(t))
        return v

    if method in FIXED_STEP_METHODS:
        grid = torch.linspace(0.0, 1.0, num_steps + 1, dtype=torch.float64).to(x0.device, torch.float32)
        solution = odeint(f, x0, grid, method=method)
    else:
        grid = torch.tensor([0.0, 1.0], device=x0.device)
        solution = odeint(f, x0, grid, method=method, atol=atol, rtol=rtol)
    return SolveResult(x1=solution[-1], nfe=nfe)
