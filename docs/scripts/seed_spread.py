"""How much a model's output depends on the sampling seed, per number of Euler steps.

    PYTHONPATH=. python docs/scripts/seed_spread.py [--image flowup/assets/grace_hopper_256.jpg]
        [--model DIR] [--steps 1 2 4] [--seeds 0 1] [--back-projection 0]

For each step count, upscales the image x2 once per seed and prints the PSNR-Y between the outputs
of the first two seeds (high = the seed barely matters) and between the first seed's output and
bicubic (for scale). One Euler step from ``t = 0`` returns ``x0 + v(x0, 0, cond)``, whose optimum
``E[x1 | cond]`` does not depend on the source noise (model card, item 9): a well-trained model
gives nearly the same image for every seed at 1 step and different draws at more steps. The flow's
own output is compared: no back-projection unless ``--back-projection N`` asks for it.
"""

from __future__ import annotations

import argparse

import torch

from eval.metrics import psnr_y
from flowup import FlowUpPipeline
from flowup.image_io import load_image
from flowup.pipeline import default_model_path
from flowup.resample import upsample


@torch.no_grad()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--image", default="flowup/assets/grace_hopper_256.jpg")
    parser.add_argument("--model", default=None, help="default: the shipped model")
    parser.add_argument("--steps", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--back-projection", type=int, default=0, metavar="N", help="back-projection steps (default: 0)")
    args = parser.parse_args()
    if len(args.seeds) < 2:
        parser.error("--seeds needs at least two seeds")

    pipe = FlowUpPipeline.from_pretrained(args.model or default_model_path())
    pipe.set_progress_bar_config(disable=True)
    rgb = load_image(args.image).rgb[None]
    bicubic = upsample(rgb, 2).clamp(0, 1)
    print("steps  PSNR-Y seed vs seed (dB)  PSNR-Y vs bicubic (dB)")
    for steps in args.steps:
        outputs = [
            pipe(image=rgb, num_inference_steps=steps, output_type="pt", back_projection_steps=args.back_projection,
                 generator=torch.Generator().manual_seed(seed)).images.clamp(0, 1)
            for seed in args.seeds
        ]  # fmt: skip
        spread, to_bicubic = psnr_y(outputs[0], outputs[1]).item(), psnr_y(outputs[0], bicubic).item()
        print(f"{steps:5d}  {spread:24.2f}  {to_bicubic:22.2f}")


if __name__ == "__main__":
    main()
