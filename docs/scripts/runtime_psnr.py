"""How far the fast CPU runtimes' outputs are from PyTorch float32's (docs/speed.md).

    PYTHONPATH=. python docs/scripts/runtime_psnr.py [--hr DIR ...] [--runtimes torch-bf16 onnx onnx-int8] [--limit N]

For every high-res image of the folders (default: the validation sets Set5, Set14 and BSD100),
makes the evaluation's low-res input (``eval.data.prepare_image``), upscales it with the shipped
model at its defaults with ``runtime="torch"`` (float32, the reference) and with each of
``--runtimes`` (same seed), and prints per set and runtime the minimum and median PSNR (dB, RGB,
[0, 1]) against the reference, the largest absolute difference, and the share of 8-bit values
that change after rounding. A runtime this machine cannot run is reported and skipped.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch
from tqdm import tqdm

from eval.data import list_images, prepare_image
from flowup import FlowUpPipeline
from flowup.pipeline import default_model_path

VAL = Path(__file__).resolve().parents[3] / "shared" / "data" / "val"


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR in dB of two ``(..., H, W)`` images in [0, 1] (inf when equal)."""
    mse = torch.mean((a.double() - b.double()) ** 2).item()
    return float("inf") if mse == 0 else -10 * torch.log10(torch.tensor(mse)).item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hr", nargs="+", default=[str(VAL / s) for s in ("Set5", "Set14", "BSD100")])
    parser.add_argument("--runtimes", nargs="+", default=["torch-bf16", "onnx"], choices=["torch-bf16", "onnx", "onnx-int8"])
    parser.add_argument("--scale", type=int, default=2)
    parser.add_argument("--limit", type=int, help="at most this many images per folder")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    pipe = FlowUpPipeline.from_pretrained(default_model_path())
    pipe.set_progress_bar_config(disable=True)
    runtimes = []
    for runtime in args.runtimes:
        try:
            pipe.set_runtime(runtime).active_runtime()
            runtimes.append(runtime)
        except ValueError as err:
            print(f"skipping {runtime}: {err}")
    print(f"shipped model, x{args.scale}, defaults, seed {args.seed}, {torch.get_num_threads()} threads; "
          f"reference: runtime torch (float32)")  # fmt: skip
    worst = dict.fromkeys(runtimes, float("inf"))
    for folder in args.hr:
        stats = {r: {"psnr": [], "largest": 0.0, "changed": 0, "values": 0} for r in runtimes}
        for path in tqdm(list_images([folder], args.limit), desc=Path(folder).name, file=sys.stderr, leave=False):
            lr = prepare_image(path, args.scale, degrade_profile="torch-float").lr  # the protocol of its figures
            outputs = {}
            for runtime in ["torch", *runtimes]:
                pipe.set_runtime(runtime)
                generator = torch.Generator().manual_seed(args.seed)
                outputs[runtime] = pipe(image=lr, scale=args.scale, generator=generator, output_type="pt").images
            reference = outputs["torch"]
            for runtime in runtimes:
                out, s = outputs[runtime], stats[runtime]
                s["psnr"].append(psnr(out, reference))
                s["largest"] = max(s["largest"], (out - reference).abs().max().item())
                s["changed"] += int(((out * 255).round() != (reference * 255).round()).sum())
                s["values"] += out.numel()
        for runtime in runtimes:
            s = stats[runtime]
            worst[runtime] = min(worst[runtime], min(s["psnr"]))
            print(f"{Path(folder).name:>8} {runtime:>10}: {len(s['psnr'])} images, PSNR vs float32 min "
                  f"{min(s['psnr']):.1f} dB, median {statistics.median(s['psnr']):.1f} dB, max |diff| "
                  f"{s['largest']:.2e}, 8-bit values changed {100 * s['changed'] / s['values']:.3f} %")  # fmt: skip
    for runtime in runtimes:
        print(f"worst image, {runtime}: {worst[runtime]:.1f} dB (the bar: >= 45 dB)")


if __name__ == "__main__":
    main()
