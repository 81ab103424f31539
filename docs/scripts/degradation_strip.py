"""Make the docs' degradation strip: one crop degraded by the training mix, several seeds, beside
the clean downsample, shown at the high-res size (nearest neighbour) so the artefacts are visible.

    PYTHONPATH=. python docs/scripts/degradation_strip.py [--image flowup/assets/grace_hopper_256.jpg]
        [--box 64 24 192 152] [--degradation configs/degradations/generator_outputs.yaml] [--seeds 1 2 3 4 5 6]
        [--zoom 2] [--out docs/images/degradation_strip.png]

``--box`` (left top right bottom, a multiple of 2) is the high-res crop; each sample is
:func:`flowup.degradations.degrade` of it at x2 with ``random.Random(seed)`` and TAEF2 as the
autoencoder of the round trip, labelled with the steps it drew.
"""

from __future__ import annotations

import argparse
import random

import torch
from PIL import Image, ImageDraw

from flowup.codecs import load_codec
from flowup.degradations import PROFILES, degrade, grain_bank, load_degradation
from flowup.image_io import load_image, tensor_to_pil

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--image", default="flowup/assets/grace_hopper_256.jpg")
    parser.add_argument("--box", type=int, nargs=4, default=[64, 24, 192, 152])
    parser.add_argument("--degradation", default="configs/degradations/generator_outputs.yaml")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4, 5, 6])
    parser.add_argument("--zoom", type=int, default=2)
    parser.add_argument("--out", default="docs/images/degradation_strip.png")
    args = parser.parse_args()

    left, top, right, bottom = args.box
    hr = load_image(args.image).rgb[:, top:bottom, left:right]
    codec = load_codec("taef2")

    def round_trip(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return codec.decode(codec.encode(x))

    mix = load_degradation(args.degradation)
    grain = grain_bank(mix)  # a mix that lays a generator's grain reads its donors once
    panels = [("clean (bicubic, 8 bits)", degrade(hr, 2, PROFILES["clean"], random.Random(0)))]
    panels += [(f"training mix, seed {s}", degrade(hr, 2, mix, random.Random(s), round_trip, grain)) for s in args.seeds]
    size = (hr.shape[-1] * args.zoom, hr.shape[-2] * args.zoom)
    crops = [(label, tensor_to_pil(lr).resize(size, Image.NEAREST)) for label, lr in panels]
    label_h = 20
    strip = Image.new("RGB", (size[0] * len(crops), size[1] + label_h), "white")
    draw = ImageDraw.Draw(strip)
    for i, (label, crop) in enumerate(crops):
        strip.paste(crop, (i * size[0], label_h))
        draw.text((i * size[0] + 4, 4), label, fill="black")
    strip.save(args.out, optimize=True)
    print(f"wrote {args.out}")

if __name__ == "__main__":
    main()
