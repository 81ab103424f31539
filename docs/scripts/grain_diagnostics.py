"""Where the default's speckle on generator outputs comes from (model card, item 21).

    PYTHONPATH=. python docs/scripts/grain_diagnostics.py [--images A.webp ...] [--crop 256] [--seeds 4]

On the held-out SD 1.x outputs (centre ``--crop`` of each; flat-area noise as ``python -m eval
native``, over the bicubic upscale's), prints:

1. the pieces of one x2 call: the codec round trip of the bicubic upsample (no flow), the flow
   without back-projection, the default (5 back-projection steps);
2. seeds: one seed's output, the mean of ``--seeds`` seeds' outputs, and the difference of two
   seeds (scaled by 1/sqrt 2 and added to bicubic): is the speckle the sampler's noise?
3. an input noise estimate (Immerkaer 1996, on the flattest quarter of 8x8 tiles of luma, in
   8-bit levels) on these inputs and on clean 8-bit bicubic downsamples of ``--photos``: can a
   statistic of the input tell a generator's grain from a photo's texture?
"""

from __future__ import annotations

import argparse
import glob
import math
import random
import statistics

import torch
import torch.nn.functional as F

from eval.data import centre_crop, crop_to_multiple
from eval.metrics import no_reference_measures, quantize, rgb_to_y, tiles
from flowup import FlowUpPipeline
from flowup.degradations import PROFILES, degrade
from flowup.image_io import load_image
from flowup.pipeline import default_model_path
from flowup.resample import upsample

SHARED = "../shared/data"


def flat_noise(outputs: list[torch.Tensor], inputs: list[torch.Tensor]) -> float:
    """The set's flat-area noise, over bicubic's (as ``eval native``)."""
    noise = reference = 0.0
    for output, lr in zip(outputs, inputs):
        measures = no_reference_measures(output.clamp(0, 1), quantize(upsample(lr, 2)))
        noise, reference = noise + float(measures["noise"].sum()), reference + float(measures["noise_bicubic"].sum())
    return noise / reference


def immerkaer_sigma(image: torch.Tensor, tile: int = 8, flat_fraction: float = 0.25) -> float:
    """Noise sigma (8-bit levels) of ``(1, 3, H, W)`` on its flattest tiles (Immerkaer's Laplacian difference)."""
    y = rgb_to_y(image.double())[0, 0] * 255
    kernel = torch.tensor([[1.0, -2, 1], [-2, 4, -2], [1, -2, 1]], dtype=y.dtype)
    response = F.conv2d(y[None, None], kernel[None, None])[0, 0].abs()
    smooth = F.avg_pool2d(y[None, None], 5, stride=1, padding=2)[0, 0, 1:-1, 1:-1]
    smooth_tiles, response_tiles = (tiles(x[None, None], tile)[0] for x in (smooth, response))  # (P, tile * tile)
    flattest = smooth_tiles.var(dim=1).argsort()[: max(1, round(flat_fraction * smooth_tiles.shape[0]))]
    return math.sqrt(math.pi / 2) / 6 * float(response_tiles[flattest].mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", nargs="+", default=sorted(glob.glob(f"{SHARED}/train/generated/sdprompts_*")))
    parser.add_argument("--photos", nargs="+", default=sorted(glob.glob(f"{SHARED}/val/Set14/*")))
    parser.add_argument("--crop", type=int, default=256)
    parser.add_argument("--seeds", type=int, default=4)
    args = parser.parse_args()
    torch.set_num_threads(2)
    pipe = FlowUpPipeline.from_pretrained(default_model_path())
    inputs = [centre_crop(load_image(p).rgb, args.crop)[None].contiguous() for p in args.images]

    def run(lr: torch.Tensor, seed: int = 0, **kwargs) -> torch.Tensor:
        out = pipe(lr, output_type="pt", generator=torch.Generator().manual_seed(seed), **kwargs).images
        return quantize(out.float())

    with torch.no_grad():
        codec_only = [
            quantize(pipe.codec.decode(pipe.codec.encode(upsample(lr, 2).clamp(0, 1))).float()) for lr in inputs
        ]
        no_bp = [run(lr, back_projection_steps=0) for lr in inputs]
        seeded = [[run(lr, seed) for seed in range(args.seeds)] for lr in inputs]
    print(f"{len(inputs)} images, centre {args.crop}^2; flat-area noise over bicubic's")
    print(f"  codec round trip of bicubic (no flow)     {flat_noise(codec_only, inputs):.2f}")
    print(f"  flow, no back-projection                  {flat_noise(no_bp, inputs):.2f}")
    print(f"  default (5 back-projection steps), seed 0 {flat_noise([s[0] for s in seeded], inputs):.2f}")
    print(
        f"  mean of {args.seeds} seeds' outputs                  {flat_noise([torch.stack(s).mean(0) for s in seeded], inputs):.2f}"
    )
    spread = [quantize(upsample(lr, 2)) + (s[0] - s[1]) / math.sqrt(2) for lr, s in zip(inputs, seeded)]
    bicubic_noise = flat_noise([quantize(upsample(lr, 2)) for lr in inputs], inputs)
    print(
        f"  difference of two seeds                   {flat_noise(spread, inputs) - bicubic_noise:.2f}"
        "  (added to bicubic, bicubic's own subtracted)"
    )
    generator = [immerkaer_sigma(lr) for lr in inputs]
    photos = []
    for index, path in enumerate(args.photos):
        hr = crop_to_multiple(load_image(path).rgb, 2)
        photos.append(immerkaer_sigma(degrade(hr, 2, PROFILES["clean"], random.Random(index))[None]))
    print("input noise estimate (Immerkaer, flattest quarter of 8x8 tiles, 8-bit levels), median [min, max]:")
    print(
        f"  these generator outputs          {statistics.median(generator):.2f} [{min(generator):.2f}, {max(generator):.2f}]"
    )
    print(f"  clean bicubic downsamples (x2)   {statistics.median(photos):.2f} [{min(photos):.2f}, {max(photos):.2f}]")


if __name__ == "__main__":
    main()
