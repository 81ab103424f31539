"""How many back-projection steps flowup's output needs to agree with its low-res input.

    PYTHONPATH=. python docs/scripts/back_projection_convergence.py [--images DIR ...] [--limit 12]

For centre 256 px crops of training photos (not the validation sets: this picks a default),
made low-res by antialiased bicubic downsampling, upscales x2 with the shipped model at its default
steps and no back-projection, then prints, after k back-projection steps, the mean and 99th
percentile of ``|lr - downsample(out)|`` in 8-bit levels, and PSNR-Y against the high-res crop
(medians over images; bicubic's PSNR-Y for reference). The default is the fewest steps that bring
the 99th percentile under one 8-bit level: the output then agrees with its 8-bit input almost
everywhere, as far as that input can tell.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator

import torch

from eval.metrics import psnr_y
from flowup import FlowUpPipeline
from flowup.back_projection import back_project, low_res_error
from flowup.image_io import ImageReadError, load_image
from flowup.pipeline import default_model_path
from flowup.resample import downsample, upsample
from train.latent_cache import list_images

STEPS = (0, 1, 2, 3, 5, 10, 30)


def parse_crop_arguments(doc: str) -> argparse.Namespace:
    """The command line: ``--images``, ``--limit``, ``--crop`` (the training photos :func:`centre_crops` reads)."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--images", nargs="+", default=["../shared/data/train/wikipedia", "../shared/data/train/polyu"])
    parser.add_argument("--limit", type=int, default=6, help="images per folder")
    parser.add_argument("--crop", type=int, default=256)
    return parser.parse_args()


def centre_crops(folders: list[str], limit: int, crop: int) -> Iterator[torch.Tensor]:
    """Centre ``crop`` px crops ``(1, 3, crop, crop)`` of the first ``limit`` images (by name) of
    each folder; unreadable files are skipped."""
    for folder in folders:
        for path in list_images([folder])[:limit]:
            try:
                image = load_image(path).rgb
            except ImageReadError:
                continue
            _, h, w = image.shape
            top, left = (h - crop) // 2, (w - crop) // 2
            yield image[:, top : top + crop, left : left + crop][None]


def shipped_pipeline() -> FlowUpPipeline:
    """The shipped model, quiet."""
    pipe = FlowUpPipeline.from_pretrained(default_model_path())
    pipe.set_progress_bar_config(disable=True)
    return pipe


@torch.no_grad()
def main() -> None:
    args = parse_crop_arguments(__doc__)
    pipe = shipped_pipeline()
    rows, bicubic = [], []  # per image: [(mean error, p99 error, psnr) for k in STEPS]
    for hr in centre_crops(args.images, args.limit, args.crop):
        lr = downsample(hr, 2)
        out = pipe(image=lr, output_type="pt", back_projection_steps=0,
                   generator=torch.Generator().manual_seed(0)).images  # fmt: skip
        row = []
        for k in STEPS:
            projected = back_project(out, lr, k)
            error = (low_res_error(projected, lr).abs() * 255).flatten()
            row.append((error.mean().item(), error.quantile(0.99).item(), psnr_y(projected, hr).item()))
        rows.append(row)
        bicubic.append(psnr_y(upsample(lr, 2), hr).item())
    table = torch.tensor(rows).median(dim=0).values  # (len(STEPS), 3)
    print(f"{len(rows)} crops, medians over crops; bicubic PSNR-Y {torch.tensor(bicubic).median().item():.2f}")
    print("steps  mean |lr - D(out)| (8-bit)  p99  PSNR-Y")
    for k, (mean, p99, psnr) in zip(STEPS, table.tolist()):
        print(f"{k:5d}  {mean:26.2f}  {p99:4.1f}  {psnr:6.2f}")


if __name__ == "__main__":
    main()
