"""Text-to-image mode: a base pipeline at low resolution + flowup, against direct high-res generation.

The paper's comparison (arXiv 2312.07360, Table 3): SD 1.5 at 512 px + flowup to 1024 px against
a distilled model generating 1024 px directly (LCM-LoRA SDXL, SDXL-Turbo). For every prompt of a
prompts file (one per line; ``#`` comments and blank lines skipped), with seed ``seed + index``:

- ``base+flowup``: :class:`flowup.text_to_image.BoostedTextToImage` (base at ``base_size``, flowup
  ``scale`` times larger, pixel-space source);
- ``base+bicubic``: the same base image, bicubic-upsampled (free: the chain returns it);
- ``direct``: the ``direct`` pipeline at ``base_size * scale`` (optionally with an LCM-LoRA and the
  LCM scheduler).

Scores: FID / KID and patch-FID / patch-KID of each method's images against a folder of reference
images (features as in :mod:`eval.features`), time per image (base and flow stages apart), NFE
where known, and CLIP score where a CLIP model folder is given (``--clip-model``; torchmetrics
``CLIPScore``), otherwise reported unavailable. Pipelines load by local path or hub id; offline, a
hub id fails with one clear line.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from tqdm.auto import tqdm

from eval.data import list_images
from eval.features import FeatureExtractor, optional_feature_extractor
from eval.metrics import distribution_distances, grid_patches, quantize
from eval.plots import plot_quality
from eval.timing import synchronize
from flowup.errors import one_line
from flowup.image_io import load_image
from flowup.resample import upsample

__all__ = ["T2IConfig", "read_prompts", "load_text_to_image", "run_t2i", "add_t2i_arguments", "run_t2i_command"]


@dataclass
class T2IConfig:
    """Options of a text-to-image comparison (YAML keys and CLI flags use these names)."""

    prompts: str = ""  # text file, one prompt per line
    reference: str = ""  # folder of reference images for FID / patch-FID
    base: str = ""  # base text-to-image pipeline: local folder or hub id
    base_size: int = 512
    base_steps: int | None = None
    base_guidance: float | None = None
    scale: int = 2
    model: str | None = None  # FlowUpPipeline folder (default: the shipped model)
    flow_steps: int | None = None
    solver: str | None = None
    direct: str | None = None  # pipeline generating at base_size * scale directly
    direct_lora: str | None = None  # e.g. an LCM-LoRA; switches the direct pipeline to LCMScheduler
    direct_steps: int | None = None
    direct_guidance: float | None = None
    out: str = "results/t2i"
    limit: int | None = None
    seed: int = 0
    device: str = "auto"
    dtype: str = "float32"  # float16 / bfloat16 for the diffusers pipelines on GPU
    fid_features: str | None = None
    patch_size: int = 256
    kid_subsets: int = 100
    clip_model: str | None = None  # local CLIP folder (CLIPModel + CLIPProcessor) for CLIP score
    num_samples: int = 4  # prompts shown side by side in samples.png
    command: str = ""

    def __post_init__(self) -> None:
        for name in ("prompts", "reference", "base"):
            if not getattr(self, name):
                raise ValueError(f"t2i needs --{name.replace('_', '-')}")
        if self.device == "auto":
            self.device = "cuda" if torch.cuda.is_available() else "cpu"
        if self.dtype not in ("float32", "float16", "bfloat16"):
            raise ValueError(f"--dtype must be float32, float16 or bfloat16, got {self.dtype!r}")


def read_prompts(path: str | Path, limit: int | None = None) -> list[str]:
    """Prompts of a text file (one per line, blank lines and ``#`` comments skipped)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"prompts file {path} does not exist")
    prompts = [line.strip() for line in path.read_text().splitlines()]
    prompts = [p for p in prompts if p and not p.startswith("#")]
    if not prompts:
        raise ValueError(f"no prompts in {path}")
    return prompts[:limit] if limit else prompts


def load_text_to_image(source: str, device: str, dtype: str = "float32", lora: str | None = None):
    """A diffusers text-to-image pipeline by local folder or hub id (:func:`flowup.loading.load_base_pipeline`,
    ``OSError`` with its one-line reason), with an optional LCM-LoRA fused in."""
    from diffusers import LCMScheduler

    from flowup.loading import BaseModelError, load_base_pipeline

    try:
        pipe = load_base_pipeline(source, dtype=getattr(torch, dtype))
    except BaseModelError as err:
        raise OSError(str(err)) from None
    if lora:
        try:
            pipe.load_lora_weights(lora)
            pipe.fuse_lora()
        except Exception as err:  # noqa: BLE001
            raise OSError(f"could not load the LoRA {lora!r}: {one_line(err)}") from None
        pipe.scheduler = LCMScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


class _TensorFeatures(torch.nn.Module):
    """A ``CLIPModel`` whose ``get_*_features`` return tensors: transformers 5 returns output objects
    (projected embeddings in ``pooler_output``), which torchmetrics' ``CLIPScore`` cannot use."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model
        self.config = model.config

    @staticmethod
    def _tensor(out: Any) -> torch.Tensor:
        return out if isinstance(out, torch.Tensor) else out.pooler_output

    def get_image_features(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        return self._tensor(self.model.get_image_features(*args, **kwargs))

    def get_text_features(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        return self._tensor(self.model.get_text_features(*args, **kwargs))


class ClipScore:
    """torchmetrics ``CLIPScore`` from a local CLIP folder, or unavailable with a reason."""

    def __init__(self, folder: str | None, device: str):
        self.metric = None
        self.reason = ""
        if not folder:
            self.reason = "no local CLIP model given (--clip-model FOLDER with a CLIPModel and its CLIPProcessor)"
            return
        try:
            from torchmetrics.multimodal.clip_score import CLIPScore
            from transformers import CLIPModel, CLIPProcessor

            def load():
                return _TensorFeatures(CLIPModel.from_pretrained(folder)), CLIPProcessor.from_pretrained(folder)

            self.metric = CLIPScore(model_name_or_path=load).to(device)
        except Exception as err:  # noqa: BLE001
            self.reason = f"could not load CLIP from {folder}: {one_line(err)}"

    def __call__(self, image: torch.Tensor, prompt: str) -> float | None:
        if self.metric is None:
            return None
        self.metric.reset()
        self.metric.update((quantize(image) * 255).to(torch.uint8).to(self.metric.device), [prompt])
        return float(self.metric.compute())


def _features(extractor: FeatureExtractor | None, images: list[torch.Tensor], patch_size: int):
    if extractor is None or not images:
        return None, None
    whole = torch.cat([extractor(im) for im in images]).cpu()
    patches = [extractor(p).cpu() for im in images if len(p := grid_patches(im[0], patch_size))]
    return whole, (torch.cat(patches) if patches else None)


def _distances(real, fake, subsets: int) -> dict[str, Any]:
    if real is None or fake is None or len(real) < 2 or len(fake) < 2:
        return {"fid": None, "kid_mean": None, "kid_std": None, "kid_subset": None}
    return distribution_distances(real, fake, kid_subsets=subsets)


def run_t2i(
    config: T2IConfig,
    base=None,
    flowup=None,
    direct=None,
    feature_extractor: FeatureExtractor | None = None,
) -> dict[str, Any]:
    """Run the comparison and write its files under ``config.out``; returns the summary dict.

    Tests may pass built pipelines (``base``, ``flowup``, ``direct``) and a small feature extractor.
    """
    from flowup.text_to_image import BoostedTextToImage

    prompts = read_prompts(config.prompts, config.limit)
    reference_paths = list_images([config.reference])
    unavailable: dict[str, str] = {}
    if feature_extractor is None:
        feature_extractor, why = optional_feature_extractor(config.fid_features, config.device)
        if why:
            unavailable["FID/KID"] = why
    if base is None:
        base = load_text_to_image(config.base, config.device, config.dtype)
    if flowup is None:
        from flowup.loading import load_upscaler

        flowup = load_upscaler(config.model, config.device, "float32")
    if direct is None and config.direct:
        direct = load_text_to_image(config.direct, config.device, config.dtype, config.direct_lora)
    chain = BoostedTextToImage(base, flowup)
    clip = ClipScore(config.clip_model, config.device)
    if clip.metric is None:
        unavailable["CLIP score"] = clip.reason

    flow_label = "base+flowup" + "".join(f":{v}" for v in (config.solver, config.flow_steps) if v is not None)
    outputs: dict[str, list[torch.Tensor]] = {flow_label: [], "base+bicubic": []}
    rows: list[dict[str, Any]] = []
    nfe: dict[str, float | None] = {flow_label: None, "base+bicubic": 0, "direct": config.direct_steps}
    high = config.base_size * config.scale
    for index, prompt in enumerate(tqdm(prompts, desc="base+flowup")):
        generator = torch.Generator("cpu").manual_seed(config.seed + index)
        out = chain(
            prompt, base_size=config.base_size, scale=config.scale, generator=generator,
            num_inference_steps=config.base_steps, guidance_scale=config.base_guidance,
            flow_steps=config.flow_steps, solver=config.solver, output_type="pt",
        )  # fmt: skip
        t = out.timings
        image = quantize(out.images[:1].float().cpu())
        outputs[flow_label].append(image)
        nfe[flow_label] = out.nfe
        rows.append({"method": flow_label, "prompt": prompt, "seed": config.seed + index, "time_s": t.total,
                     "base_time_s": t.base + t.base_decode, "flow_time_s": t.total - t.base - t.base_decode,
                     "clip_score": clip(image, prompt)})  # fmt: skip
        start = time.perf_counter()
        bicubic = quantize(upsample(out.base_images[:1].float().cpu(), config.scale))
        outputs["base+bicubic"].append(bicubic)
        rows.append({"method": "base+bicubic", "prompt": prompt, "seed": config.seed + index,
                     "time_s": t.base + t.base_decode + time.perf_counter() - start,
                     "base_time_s": t.base + t.base_decode, "flow_time_s": 0.0, "clip_score": clip(bicubic, prompt)})  # fmt: skip
    if direct is not None:
        outputs["direct"] = []
        for index, prompt in enumerate(tqdm(prompts, desc="direct")):
            generator = torch.Generator("cpu").manual_seed(config.seed + index)
            kwargs = {"num_inference_steps": config.direct_steps, "guidance_scale": config.direct_guidance}
            synchronize(config.device)
            start = time.perf_counter()
            with torch.no_grad():
                result = direct(prompt=prompt, height=high, width=high, generator=generator, output_type="pt",
                                **{k: v for k, v in kwargs.items() if v is not None})  # fmt: skip
            synchronize(config.device)
            elapsed = time.perf_counter() - start
            image = quantize(result.images[:1].float().cpu())
            outputs["direct"].append(image)
            rows.append({"method": "direct", "prompt": prompt, "seed": config.seed + index, "time_s": elapsed,
                         "base_time_s": None, "flow_time_s": None, "clip_score": clip(image, prompt)})  # fmt: skip

    references = [load_image(p).rgb[None] for p in reference_paths]
    real_whole, real_patches = _features(feature_extractor, references, config.patch_size)
    summaries = []
    for label, images in outputs.items():
        whole, patches = _features(feature_extractor, images, config.patch_size)
        dist = _distances(real_whole, whole, config.kid_subsets)
        pdist = _distances(real_patches, patches, config.kid_subsets)
        mine = [r for r in rows if r["method"] == label]
        clips = [r["clip_score"] for r in mine if r["clip_score"] is not None]
        summaries.append({
            "method": label, "images": len(images), "fid": dist["fid"], "kid": dist["kid_mean"],
            "patch_fid": pdist["fid"], "patch_kid": pdist["kid_mean"],
            "patches": 0 if patches is None else len(patches),
            "clip_score": statistics.fmean(clips) if clips else None,
            "time_per_image_s": statistics.fmean(r["time_s"] for r in mine), "nfe": nfe.get(label),
        })  # fmt: skip
    for label, key in (("FID/KID", "fid"), ("patch-FID/KID", "patch_fid")):
        if feature_extractor is not None and any(s[key] is None for s in summaries):
            unavailable.setdefault(label, f"fewer than 2 samples (images or {config.patch_size}px patches) in a set")
    return _write_t2i(config, prompts, rows, summaries, outputs, unavailable, feature_extractor)


def _write_t2i(config, prompts, rows, summaries, outputs, unavailable, extractor) -> dict[str, Any]:
    import matplotlib.pyplot as plt

    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "per_image.json").write_text(json.dumps(rows, indent=1))
    for name, data in (("per_image.csv", rows), ("summary.csv", summaries)):
        with open(out / name, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(data[0]))
            writer.writeheader()
            writer.writerows(data)
    meta = {
        "config": dataclasses.asdict(config),
        "feature_extractor": extractor.description if extractor is not None else "none",
        "unavailable": unavailable,
        "methods": summaries,
    }
    (out / "summary.json").write_text(json.dumps(meta, indent=1))
    metrics = [("patch_fid", "patch-FID (lower is better)"), ("clip_score", "CLIP score (higher is better)")]
    plots = plot_quality(summaries, out / "plots", metrics=metrics)

    shown = prompts[: config.num_samples]
    fig, axes = plt.subplots(len(shown), len(outputs), figsize=(3 * len(outputs), 3 * len(shown)), squeeze=False)
    for row, prompt in enumerate(shown):
        for col, (label, images) in enumerate(outputs.items()):
            axes[row][col].imshow(images[row][0].permute(1, 2, 0).numpy())
            axes[row][col].set_title(f"{label}\n{prompt[:40]}", fontsize=7)
            axes[row][col].axis("off")
    fig.tight_layout()
    fig.savefig(out / "samples.png", dpi=100)
    plt.close(fig)

    def cell(v, fmt="{:.2f}"):
        return "n/a" if v is None else fmt.format(v)

    table = ["| method | FID | KID x1e3 | pFID | pKID x1e3 | CLIP | s/image | NFE |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for s in summaries:
        kid = None if s["kid"] is None else s["kid"] * 1e3
        pkid = None if s["patch_kid"] is None else s["patch_kid"] * 1e3
        table.append(f"| {s['method']} | {cell(s['fid'])} | {cell(kid)} | {cell(s['patch_fid'])} | {cell(pkid)} | "
                     f"{cell(s['clip_score'])} | {cell(s['time_per_image_s'], '{:.3g}')} | {cell(s['nfe'], '{}')} |")  # fmt: skip
    lines = [
        "# flowup text-to-image evaluation", "",
        f"Command: `{config.command}`" if config.command else "", "",
        f"- {len(prompts)} prompts from {config.prompts}; base {config.base} at {config.base_size} px, x{config.scale}; "
        f"direct {config.direct or '(none)'}{' + LoRA ' + config.direct_lora if config.direct_lora else ''}",
        f"- reference images: {config.reference}",
        f"- feature extractor: {meta['feature_extractor']}", "",
        *table, "",
        *[f"- {k}: unavailable ({v})" for k, v in unavailable.items()], "",
        "Plots: " + ", ".join(f"plots/{p.name}" for p in plots) + "; samples: samples.png", "",
    ]  # fmt: skip
    (out / "report.md").write_text("\n".join(lines))
    return {"summaries": summaries, "table": "\n".join(table), "unavailable": unavailable, "out": out}


def add_t2i_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="YAML file of options (keys as the flags)")
    for f in dataclasses.fields(T2IConfig):
        if f.name in ("command",):
            continue
        kind = {"int": int, "int | None": int, "float | None": float}.get(str(f.type), str)
        p.add_argument("--" + f.name.replace("_", "-"), type=kind)


def run_t2i_command(args: argparse.Namespace, command: str) -> int:
    """``python -m eval t2i``: merge the config file and flags, run, print the table."""
    values = {k: v for k, v in vars(args).items() if k not in ("config", "command") and v is not None}
    if args.config:
        path = Path(args.config)
        if not path.is_file():
            raise FileNotFoundError(f"config file {path} does not exist")
        data = {k.replace("-", "_"): v for k, v in (yaml.safe_load(path.read_text()) or {}).items()}
        known = {f.name for f in dataclasses.fields(T2IConfig)}
        if set(data) - known:
            raise ValueError(f"{path}: unknown option(s) {', '.join(sorted(set(data) - known))}")
        values = {**data, **values}
    config = T2IConfig(**values, command=command)
    result = run_t2i(config)
    print()
    print(result["table"])
    for name, why in result["unavailable"].items():
        print(f"{name}: unavailable ({why})")
    print(f"results in {result['out']}/")
    return 0
