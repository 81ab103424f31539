"""Make the docs' detail strip: one crop of the bundled photo upscaled x2 at detail 0, 0.5, 1, 1.5, 2.

    PYTHONPATH=. python docs/scripts/detail_strip.py [--image flowup/assets/grace_hopper_256.jpg]
        [--box 96 40 160 104] [--zoom 3] [--scale 2] [--details 0 0.5 1 1.5 2] [--out docs/images/detail_strip.png]

``--box`` is a crop of the low-res input (left top right bottom); every output is cropped to the
matching region and enlarged ``--zoom`` times with nearest neighbour. Also prints, per detail, the
high-frequency energy of the whole output relative to detail 1 (texture added or removed).
"""

from __future__ import annotations

import argparse

import torch
from PIL import Image, ImageDraw

from flowup import FlowUpPipeline
from flowup.image_io import load_image, tensor_to_pil
from flowup.pipeline import default_model_path


def high_frequency_energy(rgb: torch.Tensor) -> float:
    """Mean squared Laplacian of the luma of ``rgb`` ``(1, 3, H, W)``."""
    y = (rgb * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
    kernel = torch.tensor([[0.0, 1, 0], [1, -4, 1], [0, 1, 0]]).view(1, 1, 3, 3)
    return torch.nn.functional.conv2d(y, kernel).pow(2).mean().item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--image", default="flowup/assets/grace_hopper_256.jpg")
    parser.add_argument("--box", type=int, nargs=4, default=[96, 40, 160, 104])
    parser.add_argument("--zoom", type=int, default=3)
    parser.add_argument("--scale", type=int, default=2, choices=[2, 4])
    parser.add_argument("--details", type=float, nargs="+", default=[0, 0.5, 1, 1.5, 2])
    parser.add_argument("--out", default="docs/images/detail_strip.png")
    args = parser.parse_args()

    rgb = load_image(args.image).rgb[None]
    pipe = FlowUpPipeline.from_pretrained(default_model_path())
    left, top, right, bottom = (v * args.scale for v in args.box)
    crops, energies = [], {}
    for detail in args.details:
        out = pipe(image=rgb, scale=args.scale, detail=detail, output_type="pt",
                   generator=torch.Generator().manual_seed(0)).images  # fmt: skip
        energies[detail] = high_frequency_energy(out)
        crop = tensor_to_pil(out[0]).crop((left, top, right, bottom))
        crops.append(crop.resize((crop.width * args.zoom, crop.height * args.zoom), Image.NEAREST))
    width, height, label_h = crops[0].width, crops[0].height, 22
    strip = Image.new("RGB", (width * len(crops), height + label_h), "white")
    draw = ImageDraw.Draw(strip)
    for i, (detail, crop) in enumerate(zip(args.details, crops)):
        strip.paste(crop, (i * width, label_h))
        draw.text((i * width + 6, 4), f"detail {detail:g}", fill="black")
    strip.save(args.out, optimize=True)
    reference = energies.get(1.0) or next(iter(energies.values()))
    for detail, energy in energies.items():
        print(f"detail {detail:g}: high-frequency energy {energy / reference:.2f}x detail 1's")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
