"""How strong a generator's grain is on flat areas, per source: the figures behind
flowup/grain_transplant.py's thresholds and model card item 22.

    PYTHONPATH=. python docs/scripts/grain_levels.py [--limit 40]

For each source (the training generated images by generator, the held-out SD 1.x outputs,
Generated24, and x2 downsamples of Set14 and BSD100 for photos), the flat tiles'
grain (:func:`flowup.grain_transplant.flat_grain_tiles`) of each image: how many images have flat
tiles, how many tiles in all, and the median, 10th and 90th percentile over images of their standard
deviation in 8-bit levels.
"""

from __future__ import annotations

import argparse
import glob

import numpy as np
import torch
from PIL import Image

from flowup.grain_transplant import flat_grain_tiles

GENERATED = "../shared/data/train/generated/"
SOURCES = {
    **{name: (GENERATED + name + "_*", False) for name in ("sd15grid", "horde", "sdxlstyles", "fluxgrid", "sd35")},
    "sdprompts (held out)": (GENERATED + "sdprompts_*", False),
    "Generated24": ("../shared/data/val/Generated24/*", False),
    "Set14, x2 downsampled": ("../shared/data/val/Set14/*", True),
    "BSD100, x2 downsampled": ("../shared/data/val/BSD100/*", True),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--limit", type=int, default=40, help="images per source (name order)")
    args = parser.parse_args()
    print("| source | images with flat tiles | tiles | grain std, levels: median | 10th pct | 90th pct |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, (pattern, halve) in SOURCES.items():
        stds, images, tiles = [], 0, 0
        for path in sorted(glob.glob(pattern))[: args.limit]:
            with Image.open(path) as opened:
                image = opened.convert("RGB")
            if halve:
                image = image.resize((image.width // 2, image.height // 2), Image.Resampling.BICUBIC)
            grain = flat_grain_tiles(torch.from_numpy(np.asarray(image, dtype=np.float32) / 255).permute(2, 0, 1))
            images, tiles = images + 1, tiles + len(grain)
            if len(grain):
                stds.append(grain.std().item() * 255)
        if not stds:
            print(f"| {name} | 0/{images} | 0 | | | |")
            continue
        p10, p50, p90 = np.percentile(stds, [10, 50, 90])
        print(f"| {name} | {len(stds)}/{images} | {tiles} | {p50:.2f} | {p10:.2f} | {p90:.2f} |")


if __name__ == "__main__":
    main()
