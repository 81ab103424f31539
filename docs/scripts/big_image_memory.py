"""Peak memory and time of one large upscale (the bounded-memory claim of docs/upscale.md).

    PYTHONPATH=. python docs/scripts/big_image_memory.py [--size 2048] [--scale 2|4|8] [--image PATH]
        [--model shipped|random|PATH] [--steps 1]

Upscales a random ``size`` x ``size`` image (or ``--image``, centre-cropped to ``size``) by
``--scale`` with automatic tiles on the CPU, the default runtime, and prints the wall time, s/MP
and the process's peak resident memory (``ru_maxrss``). ``--model random`` uses a
full-size ``FlowUNet()`` (default architecture, random weights: cost depends on the architecture
only) with the real TAEF2 codec; that is the setting of the figure quoted in docs/upscale.md.
"""

from __future__ import annotations

import argparse
import resource
import time

import torch

from flowup import FlowUNet, FlowUpPipeline, load_codec
from flowup.pipeline import default_model_path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=2048, help="input side in pixels (output is 2x)")
    parser.add_argument("--model", default="shipped", help="shipped, random, or a FlowUpPipeline folder")
    parser.add_argument("--steps", type=int, default=1)
    parser.add_argument("--scale", type=int, default=2, choices=(2, 4, 8))
    parser.add_argument("--image", default=None, help="a photo instead of random pixels (centre-cropped to --size)")
    args = parser.parse_args()
    if args.model == "random":
        pipe = FlowUpPipeline(flow=FlowUNet().eval(), codec=load_codec("taef2"), noise_alpha=0.9)
    else:
        pipe = FlowUpPipeline.from_pretrained(default_model_path() if args.model == "shipped" else args.model)
    if args.image:
        from flowup.image_io import load_image

        rgb = load_image(args.image).rgb
        top, left = (rgb.shape[1] - args.size) // 2, (rgb.shape[2] - args.size) // 2
        if min(top, left) < 0:
            raise SystemExit(f"big_image_memory: error: {args.image} is smaller than {args.size} px")
        image = rgb[None, :, top : top + args.size, left : left + args.size]
    else:
        image = torch.rand(1, 3, args.size, args.size, generator=torch.Generator().manual_seed(0))
    start = time.perf_counter()
    out = pipe(image=image, scale=args.scale, num_inference_steps=args.steps, output_type="pt",
               generator=torch.Generator().manual_seed(0)).images  # fmt: skip
    seconds = time.perf_counter() - start
    peak_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
    megapixels = out.shape[-1] * out.shape[-2] / 1e6
    print(f"{args.size}x{args.size} -> {out.shape[-1]}x{out.shape[-2]} (x{args.scale}), {args.steps} step(s), "
          f"model {args.model}, runtime {pipe.active_runtime()}: {seconds:.1f} s ({seconds / megapixels:.2f} s/MP), "
          f"peak RSS {peak_gib:.2f} GiB, {torch.get_num_threads()} threads")


if __name__ == "__main__":
    main()
