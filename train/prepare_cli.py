"""``python -m train prepare --images DIR [DIR ...] --out CACHE_DIR [options]``: build a latent cache."""

from __future__ import annotations

import argparse
import logging

from train.latent_cache import CacheRecipe, prepare_cache

__all__ = ["main"]


def main(argv: list[str] | None = None) -> None:
    defaults = CacheRecipe()
    parser = argparse.ArgumentParser(
        prog="python -m train prepare",
        description="Encode random high-res crops and their pixel-space-upsampled low-res versions "
        "into a latent cache (safetensors shards) for training.",
    )
    parser.add_argument("--images", nargs="+", required=True, help="image folders (searched recursively)")
    parser.add_argument("--out", required=True, help="cache folder to write")
    parser.add_argument("--codec", default=defaults.codec, help="taef2, a TAEF2 weights folder, or a diffusers VAE")
    parser.add_argument("--scale", type=int, default=defaults.scale)
    parser.add_argument("--crop-size", type=int, default=defaults.crop_size, help="high-res crop side in pixels")
    parser.add_argument("--crops-per-image", type=int, default=defaults.crops_per_image)
    parser.add_argument("--extra-crop-min-side", type=int, default=defaults.extra_crop_min_side,
                        help="images with a short side at least this get one more crop")
    parser.add_argument("--random-downscale-min", type=float, default=defaults.random_downscale_min,
                        help="large photos are first downscaled by a random factor in [this, 1]")
    parser.add_argument("--random-downscale-max", type=float, default=defaults.random_downscale_max,
                        help="... in [min, this] instead (below 1: every crop downscaled, for cleaner targets)")
    parser.add_argument("--no-hflip", action="store_true", help="disable random horizontal flips")
    parser.add_argument("--source-model", default=None, metavar="MODEL",
                        help="cascade-aware pairs for a later stage: the low-res image is MODEL's upscale "
                        "(a model folder, or 'shipped') of the crop downsampled by scale x MODEL's factor")
    parser.add_argument("--degradation", default=None, metavar="YAML",
                        help="degrade the low-res side like generator outputs: a YAML of "
                        "flowup.degradations.Degradation settings (configs/degradations/generator_outputs.yaml is the "
                        "default model's) or a profile name (clean, jpeg, noise, generator); default: clean bicubic")
    parser.add_argument("--degradation-codec", default=None, metavar="CODEC",
                        help="autoencoder of the degradation's round trip (taef2, a TAEF2 folder, a diffusers VAE "
                        "path); default: --codec")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--batch-size", type=int, default=8, help="crops encoded at once")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--resume", action="store_true",
                        help="finish an interrupted cache in --out: keep its whole shards, encode the rest")
    parser.add_argument("--bf16", action="store_true",
                        help="encode with oneDNN bfloat16 on the CPU (about 4x faster where the CPU has AMX)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    from flowup.degradations import load_degradation

    try:
        loaded = load_degradation(args.degradation)
    except ValueError as err:
        parser.exit(2, f"python -m train prepare: error: {err}\n")
    degradation = loaded.as_dict() if loaded is not None else None
    recipe = CacheRecipe(
        image_dirs=args.images, codec=args.codec, scale=args.scale, crop_size=args.crop_size,
        crops_per_image=args.crops_per_image, extra_crop_min_side=args.extra_crop_min_side,
        random_downscale_min=args.random_downscale_min,
        random_downscale_max=args.random_downscale_max, hflip=not args.no_hflip, seed=args.seed,
        source_model=args.source_model, degradation=degradation, degradation_codec=args.degradation_codec,
    )  # fmt: skip
    from flowup.codecs import load_codec

    codec = load_codec(args.codec).to(args.device)
    try:
        n = prepare_cache(recipe, args.out, codec=codec, batch_size=args.batch_size, bf16=args.bf16,
                          resume=args.resume)
    except (FileExistsError, ValueError) as err:
        parser.exit(2, f"python -m train prepare: error: {err}\n")
    print(f"{args.out} holds {n} latent pairs")
