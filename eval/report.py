"""Result files of a run: per-image and per-method JSON / CSV, a markdown report, plots.

``<out>/per_image.{csv,json}``, ``<out>/summary.{csv,json}`` (``summary.json`` also holds the
config, the feature extractor, unavailable metrics with reasons and the environment),
``<out>/report.md`` (the table), ``<out>/plots/quality_vs_time.png``,
``<out>/plots/quality_vs_nfe.png`` and ``<out>/crops/<image>.png`` (see :mod:`eval.plots`).
"""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path
from typing import Any

from eval.harness import EvalResult
from eval.plots import plot_crops, plot_quality

__all__ = ["write_reports", "format_table", "format_training_cost"]

_COLUMNS = [
    ("method", "method"),
    ("psnr_y", "PSNR-Y (dB)"),
    ("ssim_y", "SSIM-Y"),
    ("lpips", "LPIPS"),
    ("fid", "FID"),
    ("kid", "KID x1e3"),
    ("patch_fid", "pFID"),
    ("grain", "grain"),
    ("patch_kid", "pKID x1e3"),
    ("time_per_image_s", "s/image"),
    ("time_per_mp_s", "s/MP"),
    ("nfe", "NFE"),
    ("params", "params"),
    ("peak_mem_mib", "peak MiB"),
    ("training_cost", "training"),
]


def format_training_cost(cost: dict | None) -> str:
    """``{"wall_clock_hours": 3.5, "hardware": "1x H100"}`` -> ``"3.5 h on 1x H100"``."""
    if not cost:
        return "-"
    hours = cost.get("wall_clock_hours")
    hardware = cost.get("hardware")
    parts = [f"{hours:g} h" if isinstance(hours, (int, float)) else None, f"on {hardware}" if hardware else None]
    text = " ".join(p for p in parts if p)
    return text or json.dumps(cost)


def _cell(key: str, value: Any) -> str:
    if key == "training_cost":
        return format_training_cost(value)
    if value is None:
        return "n/a"
    if isinstance(value, str):
        return value
    formats = {
        "psnr_y": "{:.2f}", "ssim_y": "{:.4f}", "lpips": "{:.4f}", "fid": "{:.2f}", "patch_fid": "{:.2f}", "grain": "{:.2f}",
        "time_per_image_s": "{:.3g}", "time_per_mp_s": "{:.3g}", "peak_mem_mib": "{:.0f}",
    }  # fmt: skip
    if key in ("kid", "patch_kid"):
        return f"{value * 1e3:.2f}"
    if key == "nfe":
        return f"{value:g}"
    if key == "params":
        return f"{value / 1e6:.2f}M" if value else "0"
    return formats.get(key, "{}").format(value)


def format_table(result: EvalResult) -> str:
    """The markdown table of the run's per-method summaries."""
    header = "| " + " | ".join(title for _, title in _COLUMNS) + " |"
    rule = "|" + "|".join("---" if key == "method" else "---:" for key, _ in _COLUMNS) + "|"
    lines = [header, rule]
    for method in result.methods:
        lines.append("| " + " | ".join(_cell(key, method.summary.get(key)) for key, _ in _COLUMNS) + " |")
    return "\n".join(lines)


def _markdown(result: EvalResult, table: str, files: dict[str, Any]) -> str:
    cfg = result.config
    n_patches = result.methods[0].summary["patches"] if result.methods else 0
    anchor = "centre" if cfg.crop == "center" else "top-left"
    lines = [
        "# flowup evaluation",
        "",
        f"Command: `{cfg.command}`" if cfg.command else "",
        "",
        f"- images: {len(result.image_names)} from {', '.join(cfg.hr)} ({anchor}-cropped to multiples of "
        f"{8 * cfg.scale} px, low-res input by antialiased bicubic /{cfg.scale})",
        f"- PSNR-Y / SSIM-Y: BT.601 luma, {cfg.scale} px border cropped, outputs quantised to 8 bits; PSNR capped at 100 dB",
        f"- FID / KID on whole images; pFID / pKID on the {cfg.patch_size}x{cfg.patch_size} grid "
        f"({n_patches} patches per method); KID reported x1e3",
        f"- feature extractor: {result.feature_extractor}",
        f"- time: median of {cfg.repeats} run(s) per image after one warm-up call; s/MP per output megapixel",
        "- environment: " + ", ".join(f"{k} {v}" for k, v in result.environment.items()),
        "",
        table,
        "",
    ]
    if result.unavailable:
        lines += ["Unavailable:", ""] + [f"- {name}: unavailable ({why})" for name, why in result.unavailable.items()] + [""]
    lines += [
        "Plots: " + ", ".join(f"[{Path(p).name}]({Path(p).relative_to(cfg.out)})" for p in files["plots"]),
        "",
        "Side by side (LR | methods | HR): " + ", ".join(f"[{Path(p).name}]({Path(p).relative_to(cfg.out)})" for p in files["crops"]),
        "",
    ]
    return "\n".join(lines)


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    keys: list[str] = []
    for row in rows:
        keys += [k for k in row if k not in keys]
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: json.dumps(v) if isinstance(v, (dict, list)) else v for k, v in row.items()})


def write_reports(result: EvalResult, out: str | Path | None = None) -> dict[str, Any]:
    """Write every result file under ``out`` (default: ``result.config.out``); returns their paths."""
    out = Path(out or result.config.out)
    out.mkdir(parents=True, exist_ok=True)
    per_image = [row for m in result.methods for row in m.rows]
    summaries = [m.summary for m in result.methods]
    files: dict[str, Any] = {
        "per_image_csv": out / "per_image.csv",
        "per_image_json": out / "per_image.json",
        "summary_csv": out / "summary.csv",
        "summary_json": out / "summary.json",
        "report_md": out / "report.md",
    }
    _write_csv(files["per_image_csv"], per_image)
    files["per_image_json"].write_text(json.dumps(per_image, indent=1))
    _write_csv(files["summary_csv"], summaries)
    meta = {
        "config": dataclasses.asdict(result.config),
        "feature_extractor": result.feature_extractor,
        "unavailable": result.unavailable,
        "environment": result.environment,
        "images": result.image_names,
        "methods": summaries,
    }
    files["summary_json"].write_text(json.dumps(meta, indent=1))
    files["plots"] = plot_quality(summaries, out / "plots")
    files["crops"] = plot_crops(result.crops, [m.label for m in result.methods], out / "crops")
    table = format_table(result)
    files["report_md"].write_text(_markdown(result, table, files))
    files["table"] = table
    return files
