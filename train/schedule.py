"""The learning-rate schedule the training recipes share: linear warm-up, then cosine decay."""

from __future__ import annotations

import math
from collections.abc import Callable

__all__ = ["warmup_cosine"]


def warmup_cosine(warmup_steps: int, total_steps: int | None, final_fraction: float,
                  decay: bool = True) -> Callable[[int], float]:  # fmt: skip
    """The LR factor of step ``n`` (for ``LambdaLR``): ``(n + 1) / warmup`` during the warm-up
    (at least one step), then a cosine from 1 down to ``final_fraction`` at ``total_steps``; 1 after
    the warm-up when ``decay`` is off or there is no total to decay to."""
    warmup = max(1, warmup_steps)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if not decay or total_steps is None or total_steps <= warmup:
            return 1.0
        progress = min(1.0, (step - warmup) / (total_steps - warmup))
        return final_fraction + (1 - final_fraction) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor
