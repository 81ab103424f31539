"""Training cost: wall-clock hours and hardware, recorded in checkpoints and exported models.

- :class:`TrainingCost` is a Lightning callback: every checkpoint gets
  ``checkpoint["training_cost"] = {"wall_clock_hours", "hardware", "stages"}``; the elapsed time
  survives resumes (the callback's state is in the checkpoint). It is no ``Timer`` subclass, so
  ``trainer.max_time`` keeps working beside it.
  :mod:`train.export` copies it into the exported folder's ``training.json``, where the eval
  harness reads it (its *training* column).
- :func:`combine_costs` adds up the stages of a model that was built from another one (a distilled
  student: the teacher's training + the teacher targets + the student's training).
"""

from __future__ import annotations

import os
import platform
import time
from typing import Any

import torch
from lightning.pytorch.callbacks import Callback

__all__ = ["TrainingCost", "describe_hardware", "combine_costs"]


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def describe_hardware(accelerator: str = "cpu", devices: int = 1) -> str:
    """``"2x NVIDIA H100 80GB HBM3"`` or ``"CPU: AMD EPYC (1 of 2 threads)"``.

    On a CPU: the threads torch computes with, of those the process may use.
    """
    if accelerator in ("cuda", "gpu") and torch.cuda.is_available():
        return f"{devices}x {torch.cuda.get_device_name(0)}"
    available = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    used = torch.get_num_threads()
    return f"CPU: {_cpu_name()} ({used} threads)" if used == available else f"CPU: {_cpu_name()} ({used} of {available} threads)"


def combine_costs(stages: list[dict[str, Any]]) -> dict[str, Any]:
    """Total of cost stages ``[{"stage", "wall_clock_hours", "hardware", ...}]``.

    Returns ``{"wall_clock_hours": sum, "hardware": "A" or "A; B", "stages": stages}``; a stage
    whose hours are unknown (``None``) is kept, listed in ``"unknown"`` and left out of the sum.
    """
    known = [s for s in stages if isinstance(s.get("wall_clock_hours"), (int, float))]
    hardware: list[str] = []
    for s in stages:
        if s.get("hardware") and s["hardware"] not in hardware:
            hardware.append(s["hardware"])
    total: dict[str, Any] = {
        "wall_clock_hours": round(sum(s["wall_clock_hours"] for s in known), 6),
        "hardware": "; ".join(hardware) or None,
        "stages": stages,
    }
    unknown = [s.get("stage", "?") for s in stages if s not in known]
    if unknown:
        total["unknown"] = unknown
    return total


class TrainingCost(Callback):
    """Writes this run's wall-clock hours and hardware into every checkpoint (``"training_cost"``).

    Counts the time from the start to the end of fitting (validation included), summed over resumes.
    """

    def __init__(self) -> None:
        self._offset = 0.0  # seconds of earlier runs (restored from the checkpoint)
        self._start: float | None = None

    def elapsed_seconds(self) -> float:
        running = time.monotonic() - self._start if self._start is not None else 0.0
        return self._offset + running

    def on_train_start(self, trainer, pl_module) -> None:
        self._start = time.monotonic()

    def on_train_end(self, trainer, pl_module) -> None:
        self._offset, self._start = self.elapsed_seconds(), None

    def state_dict(self) -> dict[str, float]:
        return {"seconds": self.elapsed_seconds()}

    def load_state_dict(self, state_dict: dict[str, float]) -> None:
        self._offset = float(state_dict.get("seconds", 0.0))

    def cost(self, trainer) -> dict[str, Any]:
        """``{"wall_clock_hours", "hardware", "stages": [this run]}``, so far."""
        accelerator = type(trainer.accelerator).__name__.replace("Accelerator", "").lower()
        devices = trainer.num_devices * trainer.num_nodes
        stage = {
            "stage": "training",
            "wall_clock_hours": round(self.elapsed_seconds() / 3600, 6),
            "hardware": describe_hardware(accelerator, devices),
            "global_step": trainer.global_step,
        }
        return combine_costs([stage])

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict[str, Any]) -> None:
        checkpoint["training_cost"] = self.cost(trainer)
