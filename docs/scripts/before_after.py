"""Make the README's before/after crop: bicubic x2 | flowup x2 (shipped model) of the bundled photo.

Also prints the mean colour shift of the whole flowup output against bicubic (the model card's
"Limits").

    PYTHONPATH=. python docs/scripts/before_after.py [--image flowup/assets/grace_hopper_256.jpg]
        [--box 60 60 188 188] [--zoom 2] [--steps N] [--back-projection N] [--out docs/images/before_after.png]

``--box`` is a crop of the low-res input (left top right bottom); both outputs are cropped to the
matching 2x region and enlarged ``--zoom`` times with nearest neighbour so pixels stay visible.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from PIL import Image, ImageDraw

from flowup import FlowUpPipeline
from flowup.image_io import load_image
from flowup.pipeline import default_model_path
from flowup.resample import upsample


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--image", default="flowup/assets/grace_hopper_256.jpg")
    parser.add_argument("--box", type=int, nargs=4, default=[60, 60, 188, 188])
    parser.add_argument("--zoom", type=int, default=2)
    parser.add_argument("--steps", type=int, default=None, help="default: the model's")
    parser.add_argument("--back-projection", type=int, default=None, metavar="N", help="default: the model's")
    parser.add_argument("--out", default="docs/images/before_after.png")
    args = parser.parse_args()

    rgb = load_image(args.image).rgb[None]
    pipe = FlowUpPipeline.from_pretrained(default_model_path())
    flow = pipe(image=rgb, num_inference_steps=args.steps, output_type="pt", back_projection_steps=args.back_projection,
                generator=torch.Generator().manual_seed(0)).images
    bicubic = upsample(rgb, 2)
    shift = ((flow.clamp(0, 1) - bicubic.clamp(0, 1)).mean(dim=(0, 2, 3)) * 255).tolist()
    print("mean colour shift, flowup - bicubic (of 255 levels): R {:+.1f} G {:+.1f} B {:+.1f}".format(*shift))
    left, top, right, bottom = (2 * v for v in args.box)
    tiles = []
    for name, image in (("bicubic x2", bicubic), ("flowup x2", flow)):
        crop = image[0, :, top:bottom, left:right].clamp(0, 1)
        pil = Image.fromarray((crop.permute(1, 2, 0).numpy() * 255).round().astype("uint8"))
        pil = pil.resize((pil.width * args.zoom, pil.height * args.zoom), Image.Resampling.NEAREST)
        ImageDraw.Draw(pil).text((6, 4), name, fill=(255, 255, 255))
        tiles.append(pil)
    sheet = Image.new("RGB", (sum(t.width for t in tiles) + 8, tiles[0].height), (255, 255, 255))
    x = 0
    for tile in tiles:
        sheet.paste(tile, (x, 0))
        x += tile.width + 8
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    sheet.save(args.out, optimize=True)
    print(f"wrote {args.out} ({sheet.width}x{sheet.height})")


if __name__ == "__main__":
    main()
