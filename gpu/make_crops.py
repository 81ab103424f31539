"""Build the compact training set that travels to a GPU machine (issue 15): random crops of the
training photos as WebP, plus the validation images, under a size budget, in ``.gpu_data/``
(git-ignored; the GPU machine carries at most 64 MiB of tree).

    python gpu/make_crops.py --images ../shared/data/train --val ../shared/data/val/Set5 ../shared/data/val/Set14

Each photo gives ``--per-image`` crops of ``--size`` pixels after a random downscale in
``[--downscale-min, 1]`` (large photos hold detail at many scales), saved as WebP at ``--quality``;
crops are drawn round-robin over the photos (so every photo contributes before any gives a second
crop) until ``--count`` crops or ``--max-mb`` megabytes. Deterministic for a ``--seed``.

By default the budget is what is left of the 64 MiB a GPU job carries after the tracked tree
(``git ls-files``), the wheels in ``.whl/`` and the validation images, less 1 MiB.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import subprocess
import sys
from pathlib import Path

from PIL import Image, ImageOps

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")


def list_images(folders: list[Path]) -> list[Path]:
    """Image files under ``folders`` (recursive), sorted."""
    files = [p for folder in folders for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS]
    return sorted(files)


def random_crop(image: Image.Image, size: int, downscale_min: float, rng: random.Random) -> Image.Image | None:
    """A ``size``-pixel square crop after a random downscale; None when the photo is too small."""
    short = min(image.size)
    if short < size:
        return None
    low = max(downscale_min, size / short)
    factor = rng.uniform(low, 1.0)
    if factor < 0.999:
        image = image.resize((max(size, round(image.width * factor)), max(size, round(image.height * factor))),
                             Image.Resampling.LANCZOS)  # fmt: skip
    left, top = rng.randint(0, image.width - size), rng.randint(0, image.height - size)
    return image.crop((left, top, left + size, top + size))


CARRY_LIMIT = 64 * 2**20
ROOT = Path(__file__).resolve().parent.parent


def travelling_bytes() -> int:
    """Bytes of the tracked tree plus ``.whl/``: what travels besides the training data."""
    names = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout.split(b"\0")
    tracked = sum((ROOT / n.decode()).stat().st_size for n in names if n and (ROOT / n.decode()).is_file())
    wheels = sum(p.stat().st_size for p in (ROOT / ".whl").glob("*") if p.is_file())
    return tracked + wheels


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", nargs="+", type=Path, required=True, help="training photo folders")
    parser.add_argument("--val", nargs="*", type=Path, default=[], help="validation folders copied as they are")
    parser.add_argument("--out", type=Path, default=Path(".gpu_data"), help="output folder (default .gpu_data)")
    parser.add_argument("--size", type=int, default=288, help="crop side in pixels, a multiple of 16 (default 288)")
    parser.add_argument("--count", type=int, default=2400, help="most crops (default 2400)")
    parser.add_argument("--per-image", type=int, default=3, help="most crops per photo (default 3)")
    parser.add_argument("--downscale-min", type=float, default=0.5, help="random downscale range [this, 1]")
    parser.add_argument("--quality", type=int, default=88, help="WebP quality (default 88)")
    parser.add_argument("--max-mb", type=float, default=None,
                        help="size budget of the crops in MB (default: what the 64 MiB carry leaves, see above)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    photos = list_images(args.images)
    if not photos:
        print(f"make_crops: error: no images under {', '.join(map(str, args.images))}", file=sys.stderr)
        return 2
    val_bytes = sum(p.stat().st_size for folder in args.val for p in folder.rglob("*") if p.is_file())
    if args.max_mb is None:
        args.max_mb = (CARRY_LIMIT - travelling_bytes() - val_bytes - 2**20) / 1e6
        print(f"make_crops: budget {args.max_mb:.1f} MB (64 MiB less the tracked tree, .whl/ and the validation images)")
        if args.max_mb <= 1:
            print("make_crops: error: the tree and wheels leave no room for training data under 64 MiB", file=sys.stderr)
            return 2
    crops_dir = args.out / "crops"
    if crops_dir.exists():
        shutil.rmtree(crops_dir)
    crops_dir.mkdir(parents=True)
    rng = random.Random(args.seed)
    order = photos[:]
    rng.shuffle(order)
    written, total_bytes, skipped = 0, 0, 0
    for round_index in range(args.per_image):
        for photo in order:
            if written >= args.count or total_bytes >= args.max_mb * 1e6:
                break
            try:
                with Image.open(photo) as opened:
                    image = ImageOps.exif_transpose(opened).convert("RGB")
            except (OSError, ValueError) as err:
                if round_index == 0:
                    skipped += 1
                    print(f"make_crops: skipping {photo}: {err}", file=sys.stderr)
                continue
            crop = random_crop(image, args.size, args.downscale_min, rng)
            if crop is None:
                continue
            path = crops_dir / f"{written:05d}.webp"
            crop.save(path, "WEBP", quality=args.quality, method=6)
            total_bytes += path.stat().st_size
            written += 1
    val_dir = args.out / "val"
    if val_dir.exists():
        shutil.rmtree(val_dir)
    for folder in args.val:
        shutil.copytree(folder, val_dir / folder.name)
    val_bytes = sum(p.stat().st_size for p in val_dir.rglob("*") if p.is_file()) if val_dir.exists() else 0
    recipe = {"photos": len(photos), "skipped": skipped, "crops": written, "size": args.size,
              "per_image": args.per_image, "downscale_min": args.downscale_min, "quality": args.quality,
              "seed": args.seed, "crops_mb": round(total_bytes / 1e6, 2), "val_mb": round(val_bytes / 1e6, 2),
              "sources": [str(p) for p in args.images], "val": [str(p) for p in args.val]}  # fmt: skip
    (args.out / "recipe.json").write_text(json.dumps(recipe, indent=2) + "\n")
    print(f"make_crops: {written} crops of {args.size}² ({total_bytes / 1e6:.1f} MB) from {len(photos)} photos, "
          f"validation {val_bytes / 1e6:.1f} MB, in {args.out}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
