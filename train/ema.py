"""EMA of the weights with a warm-up, on Lightning's ``WeightAveraging`` callback.

Lightning swaps the averaged weights in for validation, keeps them in every checkpoint (the
checkpoint's ``state_dict`` holds the average; the live weights travel beside it so a resumed run
continues exactly), and copies them into the model when fitting ends.
"""

from __future__ import annotations

from typing import Any

import torch
from lightning.pytorch.callbacks import WeightAveraging

__all__ = ["WarmupEMA", "ema_decay"]


def ema_decay(num_averaged: int, decay: float, warmup: float) -> float:
    """Decay after ``num_averaged`` updates: ``min(decay, (1 + n) / (warmup + n))``.

    Early on the average follows the model closely, so it does not carry the random initialisation
    for thousands of steps (with ``warmup = 10``: 0.1 at the first update, 0.9 after 80, 0.99 after 890).
    """
    n = float(num_averaged)
    return min(decay, (1.0 + n) / (warmup + n))


class WarmupEMA(WeightAveraging):
    """Exponential moving average of the weights, updated every ``every_n_steps`` optimizer steps."""

    def __init__(self, decay: float = 0.999, warmup: float = 10.0, every_n_steps: int = 1, **kwargs: Any):
        def avg_fn(averaged: torch.Tensor, current: torch.Tensor, num_averaged: torch.Tensor | int) -> torch.Tensor:
            d = ema_decay(int(num_averaged), decay, warmup)
            return averaged * d + current * (1.0 - d)

        super().__init__(avg_fn=avg_fn, use_buffers=True, **kwargs)
        self.every_n_steps = every_n_steps

    def should_update(self, step_idx: int | None = None, epoch_idx: int | None = None) -> bool:
        return step_idx is not None and step_idx % self.every_n_steps == 0
