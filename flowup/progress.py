"""The fraction of one upscale call's work done, for a progress display.

The parts of an x2 stage are weighted by their cost per output pixel, so that one large image
moves smoothly, tile by tile through the codec and the flow, and stage by stage. The weights are
relative costs (TAEF2's encode and decode against one evaluation of a FlowUNet of the shipped
size, counted with ``torch.utils.flop_counter``); another codec or network only makes the bar
move less evenly.
"""

from __future__ import annotations

from typing import Callable

__all__ = ["WorkProgress"]


class WorkProgress:
    """Reports ``callback(fraction)``, the share of ``total`` work done, as parts finish."""

    ENCODE, DECODE, FLOW_PER_NFE, BACK_PROJECTION = 470.0, 543.0, 69.0, 25.0  # relative cost per output pixel

    def __init__(self, callback: Callable[[float], None] | None, total: float):
        self.callback, self.total, self.done = callback, max(total, 1e-12), 0.0

    def part(self, weight: float) -> Callable[[float], None] | None:
        """A callback for one part (``fraction`` of it done); the next ``part`` starts after it."""
        if self.callback is None:
            return None
        start = self.done
        self.done += weight

        def report(fraction: float) -> None:
            self.callback(min(1.0, (start + min(max(fraction, 0.0), 1.0) * weight) / self.total))

        return report

    @classmethod
    def stage_weight(cls, out_pixels: float, nfe: int, back_projection_steps: int) -> float:
        """The work of one x2 stage making ``out_pixels`` pixels with ``nfe`` velocity evaluations."""
        back_projection = cls.BACK_PROJECTION if back_projection_steps else 0.0
        return out_pixels * (cls.ENCODE + cls.DECODE + cls.FLOW_PER_NFE * nfe + back_projection)
