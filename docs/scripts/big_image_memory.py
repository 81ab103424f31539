"""Peak memory and time of one large upscale (the bounded-memory claim of docs/upscale.md).

    PYTHONPATH=. python docs/scripts/big_image_memory.py [--size 2048] [--model shipped|random|PATH] [--steps 1]

Upscales a random ``size`` x ``size`` image x2 with automatic tiles on the CPU, float32, and prints
the wall time and the process's peak resident memory (``ru_maxrss``). ``--model random`` uses a
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
    args = parser.parse_args()
    if args.model == "random":
        pipe = FlowUpPipeline(flow=FlowUNet().eval(), codec=load_codec("taef2"), noise_alpha=0.9)
    else:
        pipe = FlowUpPipeline.from_pretrained(default_model_path() if args.model == "shipped" else args.model)
    image = torch.rand(1, 3, args.size, args.size, generator=torch.Generator().manual_seed(0))
    start = time.perf_counter()
    out = pipe(image=image, num_inference_steps=args.steps, output_type="pt").images
    seconds = time.perf_counter() - start
    peak_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
    print(f"{args.size}x{args.size} -> {out.shape[-1]}x{out.shape[-2]}, {args.steps} step(s), model {args.model}: "
          f"{seconds:.0f} s, peak RSS {peak_gib:.2f} GiB, {torch.get_num_threads()} threads")


if __name__ == "__main__":
    main()
