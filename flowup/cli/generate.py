"""``flowup generate``: text -> image with a frozen base model, boosted by flowup.

Example::

    flowup generate --base path/to/stable-diffusion-v1-5 --prompt "a cat" --scale 2 -o out/

writes ``out/0000_a-cat.png`` (1024x1024) and its base image ``out/0000_a-cat_base.png``
(512x512; ``--no-save-base`` skips it) and a ``out/generate.json`` record of prompts, seeds, files
and timings. :func:`register` adds the subcommand to the ``flowup`` CLI (:mod:`flowup.cli`).

Exit status as every ``flowup`` command (:mod:`flowup.cli.common`): 2 when nothing could start
(bad options, a base or flowup model that does not load), 1 when generation failed, 0 otherwise.

Seeds: image ``i`` (over all prompts) draws its base-model noise and its flow-stage noise from
one generator seeded with ``seed + i``, exactly as
:func:`flowup.text_to_image.boost` does in Python with ``generator=torch.Generator().manual_seed(seed + i)``
(the base pipeline draws first, flowup continues the same generator): same seed, same image, in
the CLI and the API.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

from flowup.cli.common import (
    DEVICE_HELP,
    EXIT_FAILED,
    EXIT_OK,
    RunError,
    UsageError,
    check_output_location,
    is_out_of_memory,
    non_negative_int,
    one_line,
    positive_int,
    print_error,
    seed_int,
)  # fmt: skip
from flowup.loading import BaseModelError, load_base_pipeline, load_upscaler, resolve_device, resolve_dtype

if TYPE_CHECKING:

    from flowup.text_to_image import StageTimings

# torch, diffusers and flowup.text_to_image are imported where they are used, so that building the
# parser (``flowup --help``) stays fast.

__all__ = ["register", "run"]

_DTYPE_NAMES = ("float32", "float16", "bfloat16")


EXAMPLES = """\
examples:
  flowup generate --base path/to/stable-diffusion-v1-5 --prompt "a cat" -o out/
      out/0000_a-cat.png (1024 px), out/0000_a-cat_base.png (512 px), out/generate.json
  flowup generate --base stabilityai/sdxl-turbo --base-size 512 --steps 1 --guidance-scale 0 \\
      --prompts prompts.txt --num-images 4 --seed 100 --scale 4 -o out/ --offload
  flowup generate --base path/to/sd15 --prompt "a cat" --model runs/taef2-x2 --flow-steps 4 -o out/

Image i (over all prompts) uses one generator seeded with seed + i for the base model and then
flowup, as flowup.text_to_image.boost does in Python. On "out of memory":
--offload, --dtype float16, --batch-size 1 or a smaller --base-size. See docs/generate.md.
"""


# ---------------------------------------------------------------------------------- arguments


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    base = parser.add_argument_group("base model")
    base.add_argument("--base", required=True, help="diffusers text-to-image pipeline: local folder or hub id")
    base.add_argument("--prompt", action="append", default=[], help="prompt (repeat for several)")
    base.add_argument("--prompts", type=Path, help="text file with one prompt per line (blank lines and # comments skipped)")
    base.add_argument("--negative-prompt", default=None, help="negative prompt for every image")
    base.add_argument("--base-size", type=int, nargs="+", default=[512], metavar="PX",
                      help="base resolution: one number (square) or HEIGHT WIDTH (default 512)")
    base.add_argument("--steps", type=int, default=None, help="base model denoising steps (default: the pipeline's)")
    base.add_argument("--guidance-scale", type=float, default=None, help="base model guidance scale (default: the pipeline's)")
    base.add_argument("--num-images", type=positive_int, default=1, help="images per prompt (default 1)")
    base.add_argument("--batch-size", type=positive_int, default=1, help="images per base-model call (default 1)")
    base.add_argument("--seed", type=seed_int, default=0, help="seed of the first image; image i uses seed + i (default 0)")
    flow = parser.add_argument_group("flowup")
    flow.add_argument("--model", default=None, help="FlowUpPipeline folder (default: the shipped model)")
    flow.add_argument("--scale", type=int, default=2, choices=(2, 4, 8), help="upscaling factor (default 2)")
    flow.add_argument("--flow-steps", type=positive_int, default=None, help="ODE steps (default: the model's)")
    flow.add_argument("--solver", default=None, choices=("euler", "midpoint", "rk4", "dopri5"),
                      help="ODE solver (default: the model's)")
    flow.add_argument("--back-projection", type=non_negative_int, default=None, metavar="N",
                      help="low-res consistency steps after each 2x stage, 0 = off (default: the model's)")
    flow.add_argument("--upsample-in", default="pixels", choices=("pixels", "latents"),
                      help="pixels: decode with the base VAE, flowup re-encodes (default, best); latents: pass base "
                           "latents straight to flowup (only when flowup's codec is the base VAE; faster, worse)")
    run_group = parser.add_argument_group("run")
    run_group.add_argument("-o", "--output", type=Path, required=True, help="output folder")
    run_group.add_argument("--save-base", action=argparse.BooleanOptionalAction, default=True,
                           help="also write each base image as NAME_base.png (default: yes)")
    run_group.add_argument("--offload", action="store_true",
                           help="move the base model off the GPU before the flow stage (small GPUs)")
    run_group.add_argument("--device", default="auto", help=DEVICE_HELP)
    run_group.add_argument("--dtype", default="auto", choices=("auto", *_DTYPE_NAMES),
                           help="base model dtype; auto = float16 on a GPU, float32 on a CPU (float16 is refused "
                                "on a CPU, where it is about 10x slower)")
    run_group.add_argument("--quiet", action="store_true", help="no progress bars")


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``generate`` subcommand (handler in ``func``) to a ``flowup`` CLI."""
    parser = subparsers.add_parser(
        "generate",
        help="text -> image with a base diffusion model, boosted by flowup",
        description="Generate images with a frozen diffusers text-to-image pipeline at its own low "
        "resolution, then upscale them with flowup.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_arguments(parser)
    parser.set_defaults(func=run, prog_name="flowup generate")
    return parser


# ---------------------------------------------------------------------------------- loading


def _read_prompts(args: argparse.Namespace) -> list[str]:
    prompts = list(args.prompt)
    if args.prompts is not None:
        try:
            lines = args.prompts.read_text(encoding="utf-8").splitlines()
        except OSError as err:
            raise UsageError(f"--prompts {args.prompts}: {err.strerror or one_line(err)}") from None
        prompts += [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    if not prompts:
        raise UsageError("no prompt: give --prompt TEXT or --prompts FILE")
    return prompts


# ---------------------------------------------------------------------------------- outputs


def _slug(text: str, limit: int = 40) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:limit].strip("-")
    return slug or "image"


def _save_png(image, path: Path) -> None:
    """Write ``image`` (PIL) atomically (:func:`flowup.image_io.save_image`)."""
    from flowup.image_io import save_image

    save_image(image, path)


def _write_json(data: dict, path: Path) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".json")
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=2)
    os.replace(tmp, path)


# ---------------------------------------------------------------------------------- running


def _progress(total: int, desc: str, quiet: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="img", disable=quiet, file=sys.stderr)


def _generate(args: argparse.Namespace) -> dict:
    import torch

    from flowup.image_io import tensor_to_pil
    from flowup.text_to_image import BaseStageOutput, BoostedTextToImage, StageTimings
    prompts = _read_prompts(args)
    if len(args.base_size) not in (1, 2):
        raise UsageError("--base-size takes one number or HEIGHT WIDTH")
    base_size = (args.base_size[0],) * 2 if len(args.base_size) == 1 else tuple(args.base_size)
    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    check_output_location(str(args.output) + os.sep, n_inputs=len(prompts))

    start = time.perf_counter()
    upscaler = load_upscaler(args.model, device="cpu", dtype="float32")  # small: fail fast before a large base model
    try:
        base = load_base_pipeline(args.base, dtype=dtype)
    except BaseModelError as err:
        raise UsageError(str(err)) from None
    load_s = time.perf_counter() - start
    base.set_progress_bar_config(disable=args.quiet, leave=False)
    if hasattr(upscaler, "set_progress_bar_config"):
        upscaler.set_progress_bar_config(disable=args.quiet, leave=False)
    try:
        if args.offload and device.type == "cuda" and _has_accelerate():
            base.enable_model_cpu_offload(device=device)
        else:
            base.to(device)
        upscaler.to(device)
    except Exception as err:  # noqa: BLE001
        raise RunError(f"cannot move the models to {device}: {one_line(err)}") from None
    try:
        chain = BoostedTextToImage(base, upscaler, upsample_in=args.upsample_in, offload=args.offload)
    except (TypeError, ValueError) as err:
        raise UsageError(one_line(err)) from None

    # Jobs: (index, prompt). Image i has one generator seeded with seed + i: the base model draws
    # from it, the flow stage continues it (the contract of BoostedTextToImage.__call__).
    jobs = [(i * args.num_images + k, p) for i, p in enumerate(prompts) for k in range(args.num_images)]
    batches = [jobs[i : i + args.batch_size] for i in range(0, len(jobs), args.batch_size)]
    gen_device = device if device.type == "cuda" else torch.device("cpu")

    def generators(batch):
        return [torch.Generator(gen_device).manual_seed(args.seed + index) for index, _ in batch]

    # Stage 1: base images for every prompt (so that --offload releases the base model once).
    records: list[dict] = []
    base_results: list[tuple[list, list, BaseStageOutput]] = []
    timings = StageTimings()
    bar = _progress(len(jobs), "base", args.quiet)
    for batch in batches:
        batch_generators = generators(batch)
        try:
            result = chain.generate_base(
                [p for _, p in batch],
                negative_prompt=[args.negative_prompt] * len(batch) if args.negative_prompt else None,
                base_size=base_size,
                generator=batch_generators,
                num_inference_steps=args.steps,
                guidance_scale=args.guidance_scale,
                decode=args.upsample_in == "pixels" or args.save_base,
            )
        except Exception as err:  # noqa: BLE001
            if is_out_of_memory(err):
                raise RunError(
                    f"base model ran out of memory at {base_size[0]}x{base_size[1]} (batch {len(batch)}): "
                    "try --offload, --dtype float16, --batch-size 1 or a smaller --base-size"
                ) from None
            raise RunError(f"base model failed: {one_line(err)}") from None
        timings = timings + result.timings
        for j, (index, prompt) in enumerate(batch):
            name = f"{index:04d}_{_slug(prompt)}"
            record = {"index": index, "prompt": prompt, "seed": args.seed + index, "image": f"{name}.png"}
            if args.save_base and result.images is not None:
                _save_png(tensor_to_pil(result.images[j]), args.output / f"{name}_base.png")
                record["base_image"] = f"{name}_base.png"
            records.append(record)
        base_results.append((batch, batch_generators, result))
        bar.update(len(batch))
    bar.close()

    # Stage 2: flowup.
    bar = _progress(len(jobs), f"flowup x{args.scale}", args.quiet)
    nfe = None
    first = 0
    for batch, batch_generators, result in base_results:
        try:
            out = chain.upscale(
                result,
                scale=args.scale,
                num_inference_steps=args.flow_steps,
                solver=args.solver,
                back_projection_steps=args.back_projection,
                generator=batch_generators,
                output_type="pil",
            )
        except Exception as err:  # noqa: BLE001
            if is_out_of_memory(err):
                raise RunError(
                    "flowup ran out of memory: try --offload, a smaller --base-size or --batch-size 1"
                ) from None
            raise RunError(f"flowup failed: {one_line(err)}") from None
        flow_only = StageTimings(flow=out.timings.flow, offload=out.timings.offload)
        timings = timings + flow_only
        nfe = out.nfe
        for image, record in zip(out.images, records[first : first + len(batch)]):
            _save_png(image, args.output / record["image"])
            record["size"] = list(image.size)
        first += len(batch)
        bar.update(len(batch))
    bar.close()

    summary = {
        "base": args.base,
        "model": args.model or "default",
        "scale": args.scale,
        "base_size": list(base_size),
        "upsample_in": args.upsample_in,
        "device": str(device),
        "dtype": str(dtype).removeprefix("torch."),
        "nfe": nfe,
        "timings_s": {
            "load": round(load_s, 4),
            "base": round(timings.base, 4),
            "base_decode": round(timings.base_decode, 4),
            "base_decode_included_in_base": timings.base_decode_included,
            "offload": round(timings.offload, 4),
            "flow": round(timings.flow, 4),  # the whole flowup call: encode, flow, decode, back-projection
        },
        "images": records,
    }
    _write_json(summary, args.output / "generate.json")
    n = len(records)
    width, height = records[-1].get("size", ("?", "?"))
    print(
        f"flowup generate: {n} image{'s' if n != 1 else ''} {base_size[1]}x{base_size[0]} -> {width}x{height} "
        f"in {args.output} ({device}, {summary['dtype']})"
    )
    print(f"  per image: {_per_image(timings, n)}")
    print(f"  model loading {load_s:.2f} s; details in {args.output / 'generate.json'}")
    return summary


def _per_image(timings: StageTimings, n: int) -> str:
    from flowup.text_to_image import StageTimings
    scaled = StageTimings(
        base=timings.base / n,
        base_decode=timings.base_decode / n,
        flow=timings.flow / n,
        offload=timings.offload / n,
        base_decode_included=timings.base_decode_included,
    )
    return scaled.summary()


def _has_accelerate() -> bool:
    try:
        import accelerate  # noqa: F401
    except ImportError:
        return False
    return True


@contextlib.contextmanager
def _library_chatter(quiet: bool):
    """With ``--quiet``, silence diffusers' / transformers' loading bars and warnings for the run."""
    if not quiet:
        yield
        return
    from diffusers.utils import logging as diffusers_logging

    verbosity, bars = diffusers_logging.get_verbosity(), diffusers_logging.is_progress_bar_enabled()
    diffusers_logging.set_verbosity_error()
    diffusers_logging.disable_progress_bar()
    try:
        from transformers.utils import logging as transformers_logging
    except ImportError:  # transformers is only needed by some base pipelines
        transformers_logging = None
    if transformers_logging is not None:
        t_verbosity, t_bars = transformers_logging.get_verbosity(), transformers_logging.is_progress_bar_enabled()
        transformers_logging.set_verbosity_error()
        transformers_logging.disable_progress_bar()
    try:
        yield
    finally:
        diffusers_logging.set_verbosity(verbosity)
        if bars:
            diffusers_logging.enable_progress_bar()
        if transformers_logging is not None:
            transformers_logging.set_verbosity(t_verbosity)
            if t_bars:
                transformers_logging.enable_progress_bar()


def run(args: argparse.Namespace) -> int:
    """Handler of ``flowup generate``: 0 on success; a failure of the run prints one line and
    returns 1; usage problems raise :class:`~flowup.cli.common.UsageError` (exit status 2)."""
    try:
        with _library_chatter(args.quiet):
            _generate(args)
    except RunError as err:
        print_error("flowup generate", str(err))
        return EXIT_FAILED
    return EXIT_OK
