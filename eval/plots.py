"""Figures of a run (matplotlib, Agg backend, no display needed).

- :func:`plot_quality`: PSNR-Y (and patch-FID where computed) of every method against its time
  per image and against its NFE (``quality_vs_time.png``, ``quality_vs_nfe.png``);
- :func:`plot_crops`: per shown image, the same central crop side by side: the low-res input
  (nearest-neighbour enlarged), each method, the high-res image.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

__all__ = ["plot_quality", "plot_crops"]


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in name)


def plot_quality(
    summaries: list[dict[str, Any]], out: Path, metrics: list[tuple[str, str]] | None = None
) -> list[Path]:
    """Write quality-vs-time and quality-vs-NFE plots; return their paths.

    ``metrics``: ``(summary key, axis label)`` pairs, one panel each; default PSNR-Y and patch-FID
    (or FID) where computed. Metrics no method has are left out.
    """
    out.mkdir(parents=True, exist_ok=True)
    if metrics is None:
        metrics = [("psnr_y", "PSNR-Y (dB, higher is better)"), ("patch_fid", "patch-FID (lower is better)")]
        if all(s.get("patch_fid") is None for s in summaries):
            metrics[1] = ("fid", "FID (lower is better)")
    metrics = [m for m in metrics if any(s.get(m[0]) is not None for s in summaries)] or [metrics[0]]
    paths = []
    for x_key, x_label, name in (
        ("time_per_image_s", "seconds per image", "quality_vs_time.png"),
        ("nfe", "network evaluations per image (NFE)", "quality_vs_nfe.png"),
    ):
        fig, axes = plt.subplots(1, len(metrics), figsize=(6 * len(metrics), 4.5), squeeze=False)
        for ax, (y_key, y_label) in zip(axes[0], metrics):
            for s in summaries:
                if s.get(y_key) is None or s.get(x_key) is None:
                    continue
                ax.scatter(s[x_key], s[y_key], s=40)
                ax.annotate(s["method"], (s[x_key], s[y_key]), textcoords="offset points", xytext=(4, 4), fontsize=8)
            ax.set_xlabel(x_label)
            ax.set_ylabel(y_label)
            if x_key == "time_per_image_s" and all((s.get(x_key) or 0) > 0 for s in summaries):
                ax.set_xscale("log")
            elif x_key == "nfe":
                ax.set_xscale("symlog", linthresh=1)
            ax.grid(alpha=0.3)
        fig.tight_layout()
        path = out / name
        fig.savefig(path, dpi=120)
        plt.close(fig)
        paths.append(path)
    return paths


def plot_crops(crops: dict[str, dict[str, torch.Tensor]], labels: list[str], out: Path) -> list[Path]:
    """One PNG per image: LR | each method in ``labels`` | HR (where the panels have one: native
    low-res inputs have none). Returns the paths."""
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for image_name, panels in crops.items():
        methods = [(label, panels[label]) for label in labels if label in panels]
        size = (panels["HR"] if "HR" in panels else methods[0][1]).shape[-2:]
        lr = F.interpolate(panels["LR"][None], size=size, mode="nearest")[0]
        columns = [("LR (nearest)", lr)] + methods + ([("HR", panels["HR"])] if "HR" in panels else [])
        fig, axes = plt.subplots(1, len(columns), figsize=(2.6 * len(columns), 2.9), squeeze=False)
        for ax, (title, tensor) in zip(axes[0], columns):
            ax.imshow(tensor.clamp(0, 1).permute(1, 2, 0).cpu().numpy(), interpolation="nearest")
            ax.set_title(title, fontsize=8)
            ax.axis("off")
        fig.suptitle(image_name, fontsize=9)
        fig.tight_layout()
        path = out / f"{_safe(image_name)}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        paths.append(path)
    return paths
