"""Make the docs' real-inputs figure: centre crops of native generator outputs upscaled x2 by
several methods (eval method specs), side by side, one row per image, enlarged for viewing.

    PYTHONPATH=. python docs/scripts/real_inputs_strip.py [--images A.webp B.webp ...] [--crop 80]
        [--methods bicubic flowup flowup:dn0.7 realesrgan-compact-x2 realesrgan-x4plus] [--zoom 2]
        [--out docs/images/real_inputs.jpg]

The default images are three of the held-out SD 1.x / 2.x outputs (``sdprompts_*``, never trained on).
"""

from __future__ import annotations

import argparse

import torch
from PIL import Image, ImageDraw

from eval.methods import MethodContext, build_method, parse_method
from flowup.image_io import load_image, tensor_to_pil

SHARED = "../shared/data/train/generated"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", nargs="+",
                        default=[f"{SHARED}/sdprompts_003.webp", f"{SHARED}/sdprompts_005.webp", f"{SHARED}/sdprompts_010.webp"])
    parser.add_argument("--crop", type=int, default=80, help="low-res crop side (pixels, a multiple of 8)")
    parser.add_argument("--methods", nargs="+",
                        default=["bicubic", "flowup", "flowup:dn0.7", "realesrgan-compact-x2", "realesrgan-x4plus"])
    parser.add_argument("--zoom", type=int, default=2)
    parser.add_argument("--out", default="docs/images/real_inputs.jpg")
    args = parser.parse_args()

    ctx = MethodContext(scale=2, seed=0)
    methods = [build_method(parse_method(m), ctx) for m in args.methods]
    rows = []
    for path in args.images:
        rgb = load_image(path).rgb
        top, left = (rgb.shape[1] - args.crop) // 2 // 8 * 8, (rgb.shape[2] - args.crop) // 2 // 8 * 8
        lr = rgb[None, :, top : top + args.crop, left : left + args.crop]
        with torch.no_grad():
            rows.append([tensor_to_pil(m.upscale(lr, None)[0].clamp(0, 1)) for m in methods])
    side, label_h = 2 * args.crop * args.zoom, 18
    sheet = Image.new("RGB", (side * len(methods), label_h + side * len(rows)), "white")
    draw = ImageDraw.Draw(sheet)
    for j, spec in enumerate(args.methods):
        draw.text((j * side + 4, 3), spec.replace("flowup:dn", "flowup --denoise "), fill="black")
    for i, row in enumerate(rows):
        for j, image in enumerate(row):
            sheet.paste(image.resize((side, side), Image.NEAREST), (j * side, label_h + i * side))
    sheet.save(args.out, quality=92, optimize=True)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
