"""The ``flowup`` command line: ``flowup upscale ...``, ``flowup generate ...``, ``flowup export-onnx ...``.

``flowup upscale INPUT... -o OUT`` upscales image files, folders (their images, not recursive) and
glob patterns. Each bad input gets one line on stderr naming the file and the batch goes on; the
exit status is 1 when any image failed, 2 for usage errors (bad options, no model), 0 otherwise.
Outputs are written atomically (temporary file, then rename): never a half-written image.

Building the parser imports neither torch nor diffusers (``flowup --help`` answers at once); they
are imported when a command runs.
"""

from __future__ import annotations

import argparse
import glob
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["main", "build_parser", "expand_inputs"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
MAX_OUTPUT_PIXELS: int | None = None  # refuse inputs whose output would exceed this (None: image_io.MAX_PIXELS)
_EXTENSION = {"png": ".png", "jpg": ".jpg", "webp": ".webp"}
_SAME_FORMAT = {".png": "png", ".jpg": "jpg", ".jpeg": "jpg", ".webp": "webp"}

UPSCALE_EXAMPLES = """\
examples:
  flowup upscale photo.png -o out/ --model runs/taef2-x2      # out/photo_x2.png
  flowup upscale shots/ 'more/*.jpg' -o out/ --scale 4         # folders and globs, 4x
  flowup upscale big.png -o big_2x.webp --tile 64 --device cpu # one file, small tiles
  flowup upscale in/ -o out/ --format same --skip-existing     # resume an interrupted batch
  flowup upscale in/ -o out/ --threads 4 --runtime torch       # 4 CPU threads, PyTorch kernels

Images of any size and mode work: EXIF orientation is applied, greyscale stays greyscale,
alpha is upscaled separately (bicubic) and re-attached, 16-bit inputs are written as 8-bit.
On "out of memory", lower --tile (e.g. 64) or use --device cpu. On a CPU the networks run in
bfloat16 where the CPU has AMX (about 4x faster than float32), else on ONNX Runtime (about 2-3x
faster; the first run exports the model once, cached in ~/.cache/flowup/onnx). See docs/speed.md.
"""


class UsageError(Exception):
    """A problem with the command line as a whole (exit status 2)."""


# --------------------------------------------------------------------------------------------
# parser


def build_parser() -> argparse.ArgumentParser:
    """The ``flowup`` parser with its subcommands."""
    parser = argparse.ArgumentParser(
        prog="flowup",
        description="flowup: a flow-matching latent upscaler (turns small images into sharp large ones).",
        epilog="Run 'flowup upscale --help' for the upscaler's options and examples.",
    )
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND")
    _register_upscale(subparsers)
    from flowup import generate_cli

    generate_cli.register(subparsers)
    _register_export_onnx(subparsers)
    return parser


def _register_upscale(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "upscale",
        help="upscale images 2x or 4x",
        description="Upscale images 2x (or 4x: the 2x model twice) with a flowup model.",
        epilog=UPSCALE_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders of images, or glob patterns")
    p.add_argument("-o", "--output", required=True, metavar="OUT",
                   help="output folder (created if needed), or an output file name when there is one input")
    p.add_argument("--model", metavar="PATH",
                   help="model folder saved by FlowUpPipeline.save_pretrained (default: the shipped model)")
    p.add_argument("--scale", type=int, choices=(2, 4), default=2, help="upscaling factor (default: 2)")
    p.add_argument("--steps", type=_positive_int, metavar="N",
                   help="ODE steps per 2x stage (default: the model's own setting)")
    p.add_argument("--solver", choices=("euler", "midpoint", "rk4", "dopri5"),
                   help="ODE solver (default: the model's own setting)")
    p.add_argument("--back-projection", type=_non_negative_int, metavar="N",
                   help="low-res consistency steps after each 2x stage: pull the output's colours and "
                        "tones back to the input's (downsample(output) = input); 0 = off "
                        "(default: the model's own setting)")
    p.add_argument("--seed", type=int, default=0, help="noise seed; same seed, same output (default: 0)")
    p.add_argument("--tile", type=_non_negative_int, metavar="N",
                   help="tile side in latent pixels (1 latent pixel = 8 image pixels); lower it if memory "
                        "runs out; 0 = no tiling (default: automatic, from free memory)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="where to run (default: auto = cuda if available)")
    p.add_argument("--dtype", choices=("auto", "float32", "float16", "bfloat16"), default="auto",
                   help="weights / compute precision (default: auto = float16 on cuda, float32 on cpu)")
    p.add_argument("--runtime", choices=("auto", "torch", "torch-bf16", "onnx"), default="auto",
                   help="what runs the networks on a CPU: torch-bf16 = PyTorch in bfloat16 (fastest on CPUs "
                        "with AMX), onnx = ONNX Runtime in float32, torch = PyTorch in float32 (default: auto "
                        "= torch-bf16 where the CPU has AMX, else onnx; torch on a GPU)")
    p.add_argument("--threads", type=_positive_int, metavar="N",
                   help="CPU threads for the networks (default: PyTorch's default, one per core)")
    p.add_argument("--format", choices=("png", "jpg", "webp", "same"), default="png",
                   help="output format; 'same' keeps png / jpg / webp inputs' format, others become png "
                        "(default: png)")
    p.add_argument("--quality", type=int, default=95, metavar="Q", help="JPEG / WebP quality (default: 95)")
    p.add_argument("--suffix", metavar="TEXT", help="added to output file names (default: _x2 or _x4)")
    p.add_argument("--skip-existing", action="store_true", help="skip inputs whose output file already exists")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar and no summary (errors still print)")
    p.set_defaults(func=run_upscale)


def _register_export_onnx(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "export-onnx",
        help="write a model's networks as ONNX graphs",
        description="Export a flowup model's velocity network and codec to ONNX (float32, dynamic batch "
                    "and spatial sizes): flow.onnx, encoder.onnx, decoder.onnx, the codec halves that "
                    "tiled inference runs (encoder_local / encoder_image_wide / decoder_image_wide / "
                    "decoder_local) and onnx_manifest.json.",
        epilog="example:\n  flowup export-onnx flowup/pretrained/taef2-x2 onnx/taef2-x2\n\n"
               "flow.onnx takes x_t (N, C, h, w), t (N,) and cond (N, C, h, w); see docs/speed.md.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    p.add_argument("model", metavar="MODEL_DIR", help="model folder saved by FlowUpPipeline.save_pretrained")
    p.add_argument("out", metavar="OUT_DIR", help="folder to write the .onnx files to (created if needed)")
    p.set_defaults(func=run_export_onnx)


def run_export_onnx(args: argparse.Namespace) -> int:
    """``flowup export-onnx``: returns the exit status."""
    out = Path(args.out).expanduser()
    if out.exists() and not out.is_dir():
        raise UsageError(f"{args.out} exists and is not a folder")
    import torch

    from flowup.onnx_runtime import export_onnx
    from flowup.pipeline import FlowUpPipeline, ModelNotFoundError

    try:
        pipe = FlowUpPipeline.from_pretrained(Path(args.model).expanduser(), torch_dtype=torch.float32, runtime="torch")
    except (ModelNotFoundError, FileNotFoundError) as err:
        raise UsageError(_one_line(err)) from None
    except Exception as err:  # noqa: BLE001 - a broken model folder is reported in one line
        raise UsageError(f"cannot load the model from {args.model}: {_one_line(err)}") from None
    paths = export_onnx(pipe.flow, pipe.codec, out, joined=True)
    for name, path in paths.items():
        print(f"{path}  ({path.stat().st_size / 2**20:.1f} MiB)")
    print(f"{out / 'onnx_manifest.json'}")
    return EXIT_OK


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
    return value


# --------------------------------------------------------------------------------------------
# inputs and outputs


@dataclass
class _Job:
    source: Path
    target: Path | None = None
    error: str | None = None


@dataclass
class _Summary:
    done: int = 0
    skipped: int = 0
    failed: int = 0
    megapixels: float = 0.0
    errors: list[str] = field(default_factory=list)


def expand_inputs(specs: list[str]) -> list[_Job]:
    """Files, folders (their image files, sorted, not recursive) and glob patterns -> jobs.

    A pattern that matches nothing or a folder without images becomes a job with an error.
    """
    from flowup.image_io import IMAGE_EXTENSIONS

    jobs: list[_Job] = []
    seen: set[Path] = set()

    def add(path: Path, error: str | None = None) -> None:
        key = path.resolve() if error is None else path
        if key not in seen:
            seen.add(key)
            jobs.append(_Job(path, error=error))

    for spec in specs:
        path = Path(spec).expanduser()
        if path.is_dir():
            images = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()
                            and not p.name.startswith("."))  # fmt: skip
            if not images:
                add(path, f"{path}: folder holds no images ({', '.join(IMAGE_EXTENSIONS)})")
            for image in images:
                add(image)
        elif not path.exists() and glob.has_magic(spec):
            matches = sorted(Path(m) for m in glob.glob(str(path), recursive=True))
            matches = [m for m in matches if m.is_file()]
            if not matches:
                add(path, f"{spec}: no files match this pattern")
            for match in matches:
                add(match)
        else:
            add(path)
    return jobs


def _plan_outputs(jobs: list[_Job], output: str, fmt: str, suffix: str) -> None:
    """Set each job's target path (or an error for clashing names). Raises UsageError."""
    from flowup.image_io import SAVE_FORMATS

    out = Path(output).expanduser()
    single_file = out.suffix.lower() in SAVE_FORMATS and not out.is_dir()
    if single_file and len(jobs) != 1:
        raise UsageError(f"-o {output} names one file but there are {len(jobs)} inputs; give a folder")
    claimed: dict[Path, Path] = {}
    for job in jobs:
        if job.error:
            continue
        if single_file:
            target = out
        else:
            name_format = _SAME_FORMAT.get(job.source.suffix.lower(), "png") if fmt == "same" else fmt
            target = out / f"{job.source.stem}{suffix}{_EXTENSION[name_format]}"
        if target.exists() and job.source.exists() and target.resolve() == job.source.resolve():
            job.error = f"{job.source}: output would overwrite the input; use another -o or --suffix"
        elif target in claimed:
            job.error = f"{job.source}: output {target} clashes with the output of {claimed[target]}"
        else:
            claimed[target] = job.source
            job.target = target


# --------------------------------------------------------------------------------------------
# running


def run_upscale(args: argparse.Namespace) -> int:
    """``flowup upscale``: returns the exit status."""
    started = time.perf_counter()
    suffix = f"_x{args.scale}" if args.suffix is None else args.suffix
    jobs = expand_inputs(args.inputs)
    _plan_outputs(jobs, args.output, args.format, suffix)

    pending = [j for j in jobs if not j.error and not (args.skip_existing and j.target.exists())]
    pipe = _load_pipeline(args) if pending else None

    import torch
    from tqdm import tqdm

    from flowup.image_io import ImageReadError

    summary = _Summary()
    bar = tqdm(jobs, unit="img", disable=args.quiet, file=sys.stderr, dynamic_ncols=True)
    for job in bar:
        bar.set_postfix_str(job.source.name, refresh=False)
        if job.error:
            _fail(summary, job.error, bar)
            continue
        if args.skip_existing and job.target.exists():
            summary.skipped += 1
            continue
        try:
            summary.megapixels += _upscale_one(pipe, job, args) / 1e6
            summary.done += 1
        except ImageReadError as err:
            _fail(summary, str(err), bar)
        except (torch.OutOfMemoryError, MemoryError) as err:
            _fail(summary, _oom_message(job, args, err), bar)
        except RuntimeError as err:
            if "out of memory" in str(err).lower():
                _fail(summary, _oom_message(job, args, err), bar)
            else:
                _fail(summary, f"{job.source}: {_one_line(err)}", bar)
        except Exception as err:  # noqa: BLE001 - one line per failed image, the batch goes on
            _fail(summary, f"{job.source}: {_one_line(err)}", bar)
    bar.close()

    if not args.quiet:
        seconds = time.perf_counter() - started
        parts = [f"{summary.done} image{'s' if summary.done != 1 else ''} upscaled ({summary.megapixels:.2f} MP out)"]
        if summary.skipped:
            parts.append(f"{summary.skipped} skipped")
        parts.append(f"{summary.failed} failed")
        print(f"flowup: {', '.join(parts)} in {seconds:.1f} s", flush=True)
    return EXIT_FAILED if summary.failed else EXIT_OK


def _upscale_one(pipe, job: _Job, args: argparse.Namespace) -> int:
    """Upscale and write one image; returns its output pixel count."""
    import torch

    from flowup.image_io import MAX_PIXELS, load_image, save_image, tensor_to_pil, upsample_alpha

    loaded = load_image(job.source, max_pixels=(MAX_OUTPUT_PIXELS or MAX_PIXELS) // args.scale**2)
    result = pipe(
        image=loaded.rgb[None],
        scale=args.scale,
        num_inference_steps=args.steps,
        solver=args.solver,
        generator=torch.Generator().manual_seed(args.seed),
        output_type="pt",
        tile_size=args.tile,
        codec_tile_size=args.tile,
        back_projection_steps=args.back_projection,
    )
    rgb = result.images[0]
    alpha = upsample_alpha(loaded.alpha, args.scale) if loaded.alpha is not None else None
    image = tensor_to_pil(rgb, alpha, loaded.mode)
    save_image(image, job.target, quality=args.quality)
    return image.width * image.height


def _load_pipeline(args: argparse.Namespace):
    """Load the model on the requested device / dtype. Raises UsageError with a clear message."""
    import torch

    from flowup.pipeline import FlowUpPipeline, ModelNotFoundError, default_model_path

    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    elif device == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: no CUDA device is available here; use --device cpu")
    dtype_name = args.dtype if args.dtype != "auto" else ("float16" if device == "cuda" else "float32")
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        model = Path(args.model).expanduser() if args.model else default_model_path()
        pipe = FlowUpPipeline.from_pretrained(model, torch_dtype=getattr(torch, dtype_name), runtime=args.runtime)
    except (ModelNotFoundError, FileNotFoundError) as err:
        raise UsageError(_one_line(err)) from None
    except Exception as err:  # noqa: BLE001 - a broken model folder is reported in one line
        where = args.model or "the default location"
        raise UsageError(f"cannot load the model from {where}: {_one_line(err)}") from None
    pipe = pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    try:
        pipe.active_runtime()  # --runtime onnx where it cannot run: say so before any image
    except ValueError as err:
        raise UsageError(f"--runtime {args.runtime}: {err}") from None
    return pipe


def _oom_message(job: _Job, args: argparse.Namespace, err: BaseException) -> str:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    smaller = max(16, (args.tile or 128) // 2)
    return (f"{job.source}: out of memory ({_one_line(err)[:80]}); try --tile {smaller}"
            + ("" if args.device == "cpu" else ", or --device cpu"))  # fmt: skip


def _fail(summary: _Summary, message: str, bar) -> None:
    summary.failed += 1
    summary.errors.append(message)
    bar.write(f"flowup: error: {message}", file=sys.stderr)


def _one_line(err: BaseException) -> str:
    text = str(err).strip()
    first = text.splitlines()[0] if text else ""
    from flowup.image_io import ImageReadError

    return f"{type(err).__name__}: {first}" if not isinstance(err, (ImageReadError, FileNotFoundError)) else first


# --------------------------------------------------------------------------------------------
# entry point


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``flowup`` command; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "func"):
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        return args.func(args)
    except UsageError as err:
        print(f"flowup: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("flowup: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
