"""Latent-space bilinear source vs pixel-space upsampling (PSU): what the latent shortcut costs.

``flowup generate --upsample-in latents`` hands the base model's latents straight to flowup,
which upsamples them bilinearly in latent space; the default (``pixels``) decodes them, upsamples
the image bicubically and re-encodes it (PSU, the paper's best source). This script measures both
on real photos, x2, with the protocol of ``docs/evaluation.md`` (centre crop to a multiple of 16,
antialiased-bicubic low-res input, 8-bit outputs, PSNR-Y / SSIM-Y with a 2-pixel border):

- ``source`` rows: the decoded source latent itself, no flow (what the flow model starts from);
- ``flowup`` rows (with ``--model``): the full flowup output from each source, same seed/steps.

The codec is the model's (``--model``) or TAEF2 from the usual weights search. Run from the repo
root::

    python docs/scripts/latent_vs_psu.py --hr ../shared/data/val/Set14 --limit 6
    python docs/scripts/latent_vs_psu.py --model flowup/pretrained/taef2-x2 --steps 4
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from eval.data import list_images, prepare_image  # noqa: E402
from eval.metrics import psnr_y, quantize, ssim_y  # noqa: E402
from flowup.codecs import load_codec  # noqa: E402
from flowup.resample import upsample  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hr", default=str(ROOT.parent / "shared" / "data" / "val" / "Set14"))
    parser.add_argument("--limit", type=int, default=None, help="first N images")
    parser.add_argument("--model", default=None, help="FlowUpPipeline folder: also compare full flowup outputs")
    parser.add_argument("--steps", type=int, default=None, help="flowup ODE steps (default: the model's)")
    parser.add_argument("--solver", default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.set_grad_enabled(False)

    pipe = None
    if args.model is not None:
        from flowup.pipeline import FlowUpPipeline

        pipe = FlowUpPipeline.from_pretrained(args.model)
        pipe.set_progress_bar_config(disable=True)
        codec = pipe.codec
    else:
        codec = load_codec("taef2")
    codec = codec.eval()

    rows: dict[str, dict[str, list[float]]] = {}

    def record(label: str, output: torch.Tensor, hr: torch.Tensor, seconds: float) -> None:
        out = quantize(output[..., : hr.shape[-2], : hr.shape[-1]])
        row = rows.setdefault(label, {"psnr": [], "ssim": [], "s": []})
        row["psnr"].append(float(psnr_y(out, hr, border=2)))
        row["ssim"].append(float(ssim_y(out, hr, border=2)))
        row["s"].append(seconds)

    paths = list_images([args.hr], args.limit)
    for path in paths:
        item = prepare_image(path, 2, degrade_profile="torch-float")  # the protocol its figures were made with
        hr, lr = item.hr, item.lr

        start = time.perf_counter()
        psu = codec.encode(upsample(lr, 2))
        t_psu = time.perf_counter() - start
        start = time.perf_counter()
        lsu = F.interpolate(codec.encode(lr), scale_factor=2, mode="bilinear")
        t_lsu = time.perf_counter() - start
        record("source: PSU (pixels)", codec.decode(psu), hr, t_psu)
        record("source: latent bilinear", codec.decode(lsu), hr, t_lsu)
        record("bicubic (no codec)", upsample(lr, 2), hr, 0.0)

        if pipe is not None:
            kwargs = dict(num_inference_steps=args.steps, solver=args.solver, output_type="pt")
            start = time.perf_counter()
            out = pipe(image=lr, generator=torch.Generator().manual_seed(args.seed), **kwargs).images
            record("flowup from PSU (pixels)", out, hr, time.perf_counter() - start)
            start = time.perf_counter()
            out = pipe(latents=codec.encode(lr), latent_upsample="bilinear",
                       generator=torch.Generator().manual_seed(args.seed), **kwargs).images
            record("flowup from latent bilinear", out, hr, time.perf_counter() - start)
        print(f"{path.name}: done", file=sys.stderr)

    print(f"{len(paths)} images from {args.hr}, x2, codec {type(codec).__name__}"
          + (f", model {args.model}" if args.model else ""))
    print("| source | PSNR-Y (dB) | SSIM-Y | s/image |")
    print("|---|---|---|---|")
    for label, row in rows.items():
        print(f"| {label} | {statistics.fmean(row['psnr']):.2f} | {statistics.fmean(row['ssim']):.4f} "
              f"| {statistics.fmean(row['s']):.3f} |")


if __name__ == "__main__":
    main()
