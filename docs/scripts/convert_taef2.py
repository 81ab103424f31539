"""Convert TAEF2's upstream ``.pth`` weights to the float16 safetensors shipped in the package.

    python docs/scripts/convert_taef2.py ../shared/weights/taef2 flowup/pretrained/taef2

Reads ``encoder.pth`` / ``decoder.pth`` (``torch.load(weights_only=True)``; upstream
github.com/madebyollin/taesd ``taef2_encoder.pth`` / ``taef2_decoder.pth``, already float16), writes
``encoder.safetensors`` / ``decoder.safetensors`` (float16) and copies ``LICENSE``, then checks that
the codec built from each copy encodes and decodes a test image identically.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import torch
from safetensors.torch import save_file

from flowup.codecs import TAEF2Codec


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", type=Path, help="folder with encoder.pth, decoder.pth and LICENSE")
    parser.add_argument("target", type=Path, help="folder to write the safetensors into")
    args = parser.parse_args()
    args.target.mkdir(parents=True, exist_ok=True)
    for part in ("encoder", "decoder"):
        state = torch.load(args.source / f"{part}.pth", map_location="cpu", weights_only=True)
        save_file({k: v.to(torch.float16).contiguous() for k, v in state.items()}, args.target / f"{part}.safetensors",
                  metadata={"source": f"github.com/madebyollin/taesd taef2_{part}.pth", "license": "MIT"})  # fmt: skip
    shutil.copyfile(args.source / "LICENSE", args.target / "LICENSE")

    original, converted = TAEF2Codec.from_taesd_weights(args.source), TAEF2Codec.from_taesd_weights(args.target)
    image = torch.rand(1, 3, 64, 96, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        same_latents = torch.equal(original.encode(image), converted.encode(image))
        same_images = torch.equal(original.decode(original.encode(image)), converted.decode(converted.encode(image)))
    sizes = ", ".join(f"{p.name} {p.stat().st_size / 1e6:.2f} MB" for p in sorted(args.target.glob("*.safetensors")))
    print(f"wrote {sizes}; encode identical: {same_latents}, round trip identical: {same_images}")
    if not (same_latents and same_images):
        raise SystemExit("the converted weights do not reproduce the original codec")


if __name__ == "__main__":
    main()
