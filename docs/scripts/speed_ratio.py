"""flowup's default against Real-ESRGAN compact, timed in alternation (issue 30's speed bar).

    PYTHONPATH=. python docs/scripts/speed_ratio.py [--rounds 7] [--threads 2] [--x2-sizes 512 1024] [--x4-sizes 256]

``python -m eval bench`` times each row in its own block of calls, so on a shared machine a load
change between two rows moves their ratio (the same code read 1.29x and 1.60x compact's time in two
runs). Here each round times one flowup call (the shipped model at its defaults, the runtime
``auto`` picks) and then one Real-ESRGAN compact call on the same bench photo, after a warm-up of
each; the figure is the median over rounds of the per-round ratio, beside each side's median s/MP
(seconds per output megapixel). x4: compact runs x2 twice, as in the bench.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from eval.bench import bench_image, hardware_description
from eval.realesrgan import RealESRGAN
from flowup import FlowUpPipeline
from flowup.pipeline import default_model_path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--x2-sizes", type=int, nargs="*", default=[512, 1024])
    parser.add_argument("--x4-sizes", type=int, nargs="*", default=[256])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    pipe = FlowUpPipeline.from_pretrained(default_model_path())
    pipe.set_progress_bar_config(disable=True)
    compact = RealESRGAN("realesr-animevideov3-x2", threads=args.threads)
    print(f"{hardware_description('cpu')}; {args.threads} threads; flowup runtime {pipe.active_runtime()}; {args.rounds} rounds")
    for scale, sizes in ((2, args.x2_sizes), (4, args.x4_sizes)):
        for size in sizes:
            lr = bench_image(size)
            megapixels = (scale * size) ** 2 / 1e6

            def flowup_call(lr=lr, scale=scale):
                return pipe(image=lr, scale=scale, generator=torch.Generator().manual_seed(0), output_type="pt")

            def compact_call(lr=lr, scale=scale):
                x = lr
                for _ in range(scale // 2):
                    x = compact.upscale(x)
                return x

            flowup_call(), compact_call()  # warm-up
            seconds: dict[str, list[float]] = {"flowup": [], "compact": []}
            for _ in range(args.rounds):
                for name, call in (("flowup", flowup_call), ("compact", compact_call)):
                    start = time.perf_counter()
                    call()
                    seconds[name].append(time.perf_counter() - start)
            ratios = [f / c for f, c in zip(seconds["flowup"], seconds["compact"])]
            print(f"x{scale} {size}² -> {scale * size}²: flowup {statistics.median(seconds['flowup']) / megapixels:.2f} s/MP, "
                  f"compact {statistics.median(seconds['compact']) / megapixels:.2f} s/MP, ratio median "
                  f"{statistics.median(ratios):.2f}x (per round {min(ratios):.2f}-{max(ratios):.2f}x)", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
