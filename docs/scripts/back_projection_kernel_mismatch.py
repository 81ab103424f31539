"""Does back-projection still help when the low-res input was *not* made by flowup's downsampling?

    PYTHONPATH=. python docs/scripts/back_projection_kernel_mismatch.py [--images DIR ...] [--limit 6]

Back-projection assumes the input is ``downsample(high-res)`` with antialiased bicubic (how the
training pairs and the validation inputs are made). Real inputs come from elsewhere: a generator's
own output, a camera, another resizer. For centre 256 px crops of training photos, this makes the
low-res input three ways (antialiased bicubic; PIL box / area averaging; PIL Lanczos), upscales x2
with the shipped model at its default steps with 0 and 5 back-projection steps, and prints the
median PSNR-Y against the high-res crop, and bicubic's, per kind of input.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from eval.metrics import psnr_y
from flowup.resample import downsample, upsample

# beside this script: the same crops, command line and model
from back_projection_convergence import centre_crops, parse_crop_arguments, shipped_pipeline


def pil_downsample(hr: torch.Tensor, method: Image.Resampling) -> torch.Tensor:
    """``(1, 3, H, W)`` -> ``(1, 3, H/2, W/2)`` with a PIL filter, through 8 bits like a saved file."""
    array = (hr[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    image = Image.fromarray(array)
    small = image.resize((image.width // 2, image.height // 2), method)
    return torch.from_numpy(np.asarray(small, dtype=np.float32) / 255).permute(2, 0, 1)[None]


@torch.no_grad()
def main() -> None:
    args = parse_crop_arguments(__doc__)
    pipe = shipped_pipeline()
    kinds = {
        "antialiased bicubic (flowup's)": lambda hr: downsample(hr, 2),
        "box (area average)": lambda hr: pil_downsample(hr, Image.Resampling.BOX),
        "Lanczos (PIL)": lambda hr: pil_downsample(hr, Image.Resampling.LANCZOS),
    }
    scores = {k: [] for k in kinds}  # per kind: rows of (bicubic, bp0, bp5) PSNR-Y
    for hr in centre_crops(args.images, args.limit, args.crop):
        for kind, make_lr in kinds.items():
            lr = make_lr(hr)
            row = [psnr_y(upsample(lr, 2), hr).item()]
            for steps in (0, 5):
                out = pipe(image=lr, output_type="pt", back_projection_steps=steps,
                           generator=torch.Generator().manual_seed(0)).images  # fmt: skip
                row.append(psnr_y(out, hr).item())
            scores[kind].append(row)
    print(f"{len(scores[next(iter(kinds))])} crops; median PSNR-Y (dB)")
    print(f"{'low-res input made by':32s} bicubic  flowup bp0  flowup bp5")
    for kind, rows in scores.items():
        b, p0, p5 = torch.tensor(rows).median(dim=0).values.tolist()
        print(f"{kind:32s} {b:7.2f}  {p0:10.2f}  {p5:10.2f}")


if __name__ == "__main__":
    main()
