"""No-reference evaluation: native low-res images (a generator's outputs) where no high-res exists.

``python -m eval native --images DIR [DIR ...] --methods bicubic flowup realesrgan-compact-x2 ...``

Every method upscales each image as it is (8-bit, as the file holds; cropped to a multiple of 8
pixels); each output is scored against the bicubic upscale of the same input
(:func:`eval.metrics.no_reference_measures`): **flat-area noise** (high-frequency energy on the
flattest quarter of the image, over bicubic's: below 1 is cleaner than bicubic), **edge
sharpness** (gradient on the busiest tenth, over bicubic's: above 1 is crisper, but noise there
raises it too) and **edge acutance** (how steep the strongest edges are for their contrast, over
bicubic's: above 1 is crisper; noise does not raise it, halos lower it). Writes a
markdown table, per-image CSV / JSON and side-by-side crops (LR | methods) to ``--out``, so a
user can look at flowup beside Real-ESRGAN on their own images.
"""

from __future__ import annotations

import argparse
import json
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from tqdm.auto import tqdm

from eval.data import centre_crop, crop_to_multiple, list_images
from eval.methods import EVAL_RUNTIME, RUNTIME_HELP, Method, MethodContext, build_method, parse_method
from eval.metrics import no_reference_measures, quantize
from eval.plots import plot_crops
from eval.timing import timed
from flowup.image_io import load_image
from flowup.resample import upsample

__all__ = ["NativeConfig", "run_native", "add_native_arguments", "run_native_command"]

NEEDS_HIGH_RES = ("codec-hr",)


@dataclass
class NativeConfig:
    """A no-reference run; CLI flags use these names."""

    images: list[str] = field(default_factory=list)
    methods: list[str] = field(default_factory=lambda: ["bicubic", "flowup"])
    scale: int = 2
    out: str = "results/native"
    model: str | None = None
    limit: int | None = None
    device: str = "cpu"
    runtime: str = EVAL_RUNTIME  # what runs the flowup rows (flowup.runtimes)
    seed: int = 0
    num_crops: int = 6
    crop_size: int = 192  # side of the shown crops, output pixels
    input_crop: int | None = None  # score the centre N x N of each input only (cheaper; None: whole images)
    command: str = ""

    def __post_init__(self) -> None:
        if self.input_crop is not None and self.input_crop < 8:
            raise ValueError(f"--input-crop must be at least 8 pixels, got {self.input_crop}")
        if self.scale not in (2, 4):
            raise ValueError(f"--scale must be 2 or 4, got {self.scale}")
        from flowup.runtimes import check_runtime_name

        check_runtime_name(self.runtime)
        bad = [m for m in self.methods if parse_method(m).family in NEEDS_HIGH_RES]
        if bad:
            raise ValueError(f"{', '.join(bad)} needs a high-res image; native inputs have none")


def _summary(label: str, rows: list[dict[str, Any]]) -> dict[str, Any]:
    megapixels = sum(r["width"] * r["height"] for r in rows) / 1e6
    return {
        "method": label,
        "images": len(rows),
        # set ratios (sums over images), as the harness's flat-area grain
        "flat_noise": sum(r["noise"] for r in rows) / max(sum(r["noise_bicubic"] for r in rows), 1e-20),
        "edge_sharpness": sum(r["edge"] for r in rows) / max(sum(r["edge_bicubic"] for r in rows), 1e-20),
        "edge_acutance": sum(r["acutance"] for r in rows) / max(sum(r["acutance_bicubic"] for r in rows), 1e-20),
        "flat_noise_median": statistics.median(r["noise"] / max(r["noise_bicubic"], 1e-20) for r in rows),
        "time_per_mp_s": sum(r["time_s"] for r in rows) / megapixels,
    }


def run_native(config: NativeConfig, methods: list[Method] | None = None,
               log: Callable[[str], None] = print) -> dict[str, Any]:  # fmt: skip
    """Run ``config``; returns ``{"summary": [...], "rows": [...], "crops": {...}}`` and writes reports."""
    ctx = MethodContext(scale=config.scale, device=config.device, model=config.model, seed=config.seed,
                        runtime=config.runtime)  # fmt: skip
    if methods is None:
        methods = [build_method(parse_method(m), ctx) for m in config.methods]
    files = [Path(p) for p in config.images if Path(p).is_file()]  # single files (a shell glob) and folders
    folders = [p for p in config.images if not Path(p).is_file()]
    paths = sorted(files) + (list_images(folders) if folders else [])
    if not paths:
        raise FileNotFoundError(f"no images in {', '.join(config.images)}")
    paths = paths[: config.limit] if config.limit else paths
    inputs = []
    for path in paths:
        lr = load_image(path).rgb
        lr = centre_crop(lr, config.input_crop) if config.input_crop else crop_to_multiple(lr, 8)
        lr = lr[None].contiguous()
        inputs.append((path.stem, lr, quantize(upsample(lr, config.scale))))
    crops: dict[str, dict[str, torch.Tensor]] = {}
    for name, lr, _ in inputs[: config.num_crops]:
        side = min(config.crop_size // config.scale, *lr.shape[-2:])
        top, left = (lr.shape[-2] - side) // 2, (lr.shape[-1] - side) // 2
        crops[name] = {"LR": lr[0, :, top : top + side, left : left + side], "box": (top, left, side)}
    rows: list[dict[str, Any]] = []
    for method in methods:
        method.upscale(inputs[0][1], None)  # warm-up, not timed
        for name, lr, bicubic in tqdm(inputs, desc=method.label):
            output, timing = timed(lambda: method.upscale(lr.to(config.device), None), config.device)
            output = quantize(output.float().cpu())
            if output.shape != bicubic.shape:
                raise RuntimeError(f"{method.label} returned {tuple(output.shape)} for {name}, expected {tuple(bicubic.shape)}")
            measures = no_reference_measures(output, bicubic)
            rows.append({"method": method.label, "image": name, "width": output.shape[-1], "height": output.shape[-2],
                         **{k: float(v[0]) for k, v in measures.items()}, "time_s": timing.median})  # fmt: skip
            if name in crops:
                top, left, side = crops[name]["box"]
                s = config.scale
                crops[name][method.label] = output[0, :, s * top : s * (top + side), s * left : s * (left + side)]
    summary = [_summary(m.label, [r for r in rows if r["method"] == m.label]) for m in methods]
    for s in summary:
        log(f"{s['method']}: flat-area noise {s['flat_noise']:.2f}x bicubic, edge sharpness {s['edge_sharpness']:.2f}x, "
            f"edge acutance {s['edge_acutance']:.2f}x")
    for panels in crops.values():
        panels.pop("box")
    _write(config, summary, rows, crops, [m.label for m in methods])
    return {"summary": summary, "rows": rows, "crops": crops}


def format_table(summary: list[dict[str, Any]]) -> str:
    lines = ["| method | flat-area noise (x bicubic) | edge sharpness (x bicubic) | edge acutance (x bicubic) | s/MP |",
             "|---|---:|---:|---:|---:|"]  # fmt: skip
    for s in summary:
        lines.append(f"| {s['method']} | {s['flat_noise']:.2f} | {s['edge_sharpness']:.2f} | {s['edge_acutance']:.2f} "
                     f"| {s['time_per_mp_s']:.3g} |")  # fmt: skip
    return "\n".join(lines)


def _short_list(paths: list[str], shown: int = 3) -> str:
    """``paths`` for a title: all of them when few, else the first ``shown`` and how many more."""
    if len(paths) <= shown + 1:
        return ", ".join(paths)
    return f"{', '.join(paths[:shown])} and {len(paths) - shown} more"


def _write(config: NativeConfig, summary: list[dict], rows: list[dict], crops: dict, labels: list[str]) -> None:
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps({"config": asdict(config), "summary": summary}, indent=2))
    (out / "per_image.json").write_text(json.dumps(rows, indent=2))
    with open(out / "per_image.csv", "w") as f:
        keys = list(rows[0])
        f.write(",".join(keys) + "\n")
        f.writelines(",".join(str(r[k]) for k in keys) + "\n" for r in rows)
    crop_files = plot_crops(crops, labels, out / "crops")
    table = format_table(summary)
    (out / "report.md").write_text(
        f"# No-reference evaluation: {_short_list(config.images)} (x{config.scale})\n\n`{config.command}`\n\n{table}\n\n"
        "Flat-area noise: the output's high-frequency energy on the flattest quarter of each image, over the bicubic "
        "upscale's (below 1: cleaner). Edge sharpness: its gradient on the busiest tenth, over bicubic's (above 1: "
        "crisper; noise there counts too). Edge acutance: the steepness of its strongest edges for their contrast, "
        f"over bicubic's (above 1: crisper; halos lower it, noise does not raise it). {len({r['image'] for r in rows})} images; time on {config.device}, one run each.\n\n"
        + "".join(f"![{p.stem}](crops/{p.name})\n" for p in crop_files)
    )
    print(table)
    print(f"results in {out}/ (report.md, summary.json, per_image.csv, crops/)")


def add_native_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--images", nargs="+", required=True, metavar="PATH",
                   help="folders (searched recursively) or files of native low-res images")
    p.add_argument("--methods", nargs="+", default=None, metavar="SPEC",
                   help="methods as in `eval run` (default: bicubic flowup); codec-hr needs a high-res image")
    p.add_argument("--scale", type=int, default=2, help="2 or 4 (default 2)")
    p.add_argument("--out", default="results/native", help="results folder (default results/native)")
    p.add_argument("--model", help="FlowUpPipeline folder for 'flowup' (default: the shipped model)")
    p.add_argument("--limit", type=int, help="the first N images only")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument("--runtime", help=RUNTIME_HELP)
    p.add_argument("--seed", type=int, default=0, help="noise seed of generative methods (default 0)")
    p.add_argument("--input-crop", type=int, metavar="N",
                   help="score the centre N x N pixels of each input only (cheaper for slow methods; default: whole images)")
    p.add_argument("--num-crops", type=int, default=6, help="images shown side by side (default 6)")
    p.add_argument("--crop-size", type=int, default=192, help="side of the shown crops in output pixels (default 192)")


def run_native_command(args: argparse.Namespace, command: str) -> int:
    options = {k: v for k, v in vars(args).items() if k != "command" and v is not None}
    run_native(NativeConfig(**options, command=command))
    return 0
