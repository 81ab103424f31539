"""Wall time and peak memory of a method call.

- Time: ``repeats`` timed calls (after the caller's warm-up), ``torch.cuda.synchronize`` before
  and after each on GPU; the median is reported.
- Peak memory: on CUDA, ``torch.cuda.max_memory_allocated`` (reset before the call); on CPU, the
  process resident-set high-water mark (``VmHWM``), reset before the call through
  ``/proc/self/clear_refs`` where Linux allows it, else ``resource.getrusage`` (never reset, so
  an upper bound). CPU figures include the whole process (libraries, models, images, memory the
  allocator kept).
"""

from __future__ import annotations

import resource
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, TypeVar

import torch

__all__ = ["Timing", "timed", "synchronize", "PeakMemory"]

T = TypeVar("T")


def synchronize(device: str | torch.device) -> None:
    """Wait for queued GPU work (no-op on CPU)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class Timing:
    """Seconds of each timed call and their median."""

    seconds: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)


def timed(fn: Callable[[], T], device: str | torch.device, repeats: int = 1) -> tuple[T, Timing]:
    """Call ``fn`` ``repeats`` times; return the last result and the timings."""
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}")
    seconds = []
    result = None
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        result = fn()
        synchronize(device)
        seconds.append(time.perf_counter() - start)
    return result, Timing(seconds)


def _read_vmhwm_kib() -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_vmhwm() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


class PeakMemory:
    """Context manager measuring peak memory in MiB over its body: ``.mib`` and ``.kind``."""

    def __init__(self, device: str | torch.device):
        self.device = torch.device(device)
        self.mib: float = float("nan")
        self.kind = ""

    def __enter__(self) -> "PeakMemory":
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            self.kind = "CUDA max_memory_allocated"
        elif _reset_vmhwm() and _read_vmhwm_kib() is not None:
            self.kind = "process RSS high-water (reset per call)"
        else:
            self.kind = "process RSS high-water (since start)"
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            self.mib = torch.cuda.max_memory_allocated(self.device) / 2**20
            return
        kib = _read_vmhwm_kib()
        if kib is None:
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            kib = peak / 1024 if sys.platform == "darwin" else peak  # bytes on macOS, KiB on Linux
        self.mib = kib / 1024
