"""``flowup upscale INPUT... -o OUT``: upscale image files, folders (their images, not recursive)
and glob patterns.

Before any image is computed: the options are validated, the output location is checked once
(a folder that can be created and written to, or one file name of a supported format), and the
jobs are planned: inputs whose output names would collide (``a.jpg`` and ``a.png``) are named
apart by their extension, stale temporary files of an earlier killed run are removed. Then each
bad input gets one line on stderr naming it and the batch goes on. Exit status: 1 when any image
failed, 2 for usage errors (nothing done), 0 otherwise, 130 on Ctrl-C or SIGTERM. Outputs are
written atomically (temporary file, then rename): never a half-written image.

Several processes, GPUs or machines: under ``accelerate launch --num_processes N -m flowup upscale
...`` (or ``torchrun``; anything that sets ``WORLD_SIZE``) every process plans the same jobs and
takes its share (Accelerate's ``PartialState.split_between_processes``), each on its own device,
writing its own outputs atomically; ``--skip-existing`` resumes a killed run, and the summary is
gathered and printed by the main process.
"""

from __future__ import annotations

import argparse
import errno
import glob
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from flowup.cli.common import (
    DEVICE_HELP,
    EXIT_FAILED,
    EXIT_OK,
    UsageError,
    check_output_location,
    denoise_float,
    detail_per_stage,
    is_out_of_memory,
    non_negative_int,
    one_line,
    positive_int,
    quality_int,
    seed_int,
)  # fmt: skip
from flowup.runtimes import RUNTIME_NAMES, RUNTIMES

__all__ = ["register", "run", "expand_inputs", "plan_outputs", "Job", "load_pipeline"]

MAX_OUTPUT_PIXELS: int | None = None  # refuse inputs whose output would exceed this (None: image_io.MAX_PIXELS)
_EXTENSION = {"png": ".png", "jpg": ".jpg", "webp": ".webp"}
_SAME_FORMAT = {".png": "png", ".jpg": "jpg", ".jpeg": "jpg", ".webp": "webp"}

EXAMPLES = """\
examples:
  flowup upscale photo.png -o out/ --model runs/taef2-x2      # out/photo_x2.png
  flowup upscale shots/ 'more/*.jpg' -o out/ --scale 4         # folders and globs, 4x
  flowup upscale big.png -o big_2x.webp --tile 64 --device cpu # one file, small tiles
  flowup upscale in/ -o out/ --format same --skip-existing     # resume an interrupted batch
  flowup upscale in/ -o out/ --threads 4 --runtime torch       # 4 CPU threads, PyTorch kernels
  flowup upscale in/ -o out/ --runtime auto-exact              # float32's output to rounding (slower)

Images of any size and mode work: EXIF orientation is applied, greyscale stays greyscale,
alpha is upscaled separately (bicubic) and re-attached, 16-bit inputs are written as 8-bit.
Inputs of one folder whose outputs would share a name (a.jpg, a.png) are named apart
(a_jpg_x2.png, a_png_x2.png). On "out of memory", lower --tile (e.g. 64) or use --device cpu.
On a CPU the networks run in bfloat16 where the CPU has AMX, else on ONNX Runtime in 8-bit
integers (the first run exports and quantizes the model once, about 10 s on 2 cores, cached in
~/.cache/flowup/onnx). See docs/speed.md.
"""


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``upscale`` subcommand (handler in ``func``)."""
    p = subparsers.add_parser(
        "upscale",
        help="upscale images 2x, 4x or 8x",
        description="Upscale images 2x (or 4x: the 2x model twice) with a flowup model.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders of images, or glob patterns")
    p.add_argument("-o", "--output", required=True, metavar="OUT",
                   help="output folder (created if needed), or an output file name (.png, .jpg, .webp) "
                        "when there is one input")
    p.add_argument("--model", metavar="PATH",
                   help="model folder saved by FlowUpPipeline.save_pretrained (default: the shipped model)")
    p.add_argument("--scale", type=int, choices=(2, 4, 8), default=2, help="upscaling factor (default: 2)")
    p.add_argument("--steps", type=positive_int, metavar="N",
                   help="ODE steps per 2x stage (default: the model's own setting)")
    p.add_argument("--solver", choices=("euler", "midpoint", "rk4", "dopri5"),
                   help="ODE solver (default: the model's own setting)")
    p.add_argument("--back-projection", type=non_negative_int, metavar="N",
                   help="low-res consistency steps after each 2x stage: pull the output's colours and "
                        "tones back to the input's (downsample(output) = input); 0 = off "
                        "(default: the model's own setting)")
    p.add_argument("--detail", type=detail_per_stage, default=None, metavar="X[,Y]",
                   help="how much of the texture the flow adds to keep, per x2 stage: 1 = all, 0 = none (the "
                        "clean codec round trip of the bicubic upsample: no added grain), up to 2 = more; "
                        "X,Y gives each stage its own at x4 (default: the model's: 1 at x2, 0.5 at x4 for "
                        "the shipped model)")
    p.add_argument("--denoise", type=denoise_float, default=None, metavar="S",
                   help="clean <-> faithful, 0 to 1: smooth the input's grain and JPEG / WebP artefacts away "
                        "(edges kept) before upscaling; 0 keeps everything the input holds, 1 cleans most "
                        "(default: the model's own setting)")
    p.add_argument("--seed", type=seed_int, default=0, help="noise seed, 0 to 2**64-1; same seed, same output (default: 0)")
    p.add_argument("--tile", type=non_negative_int, metavar="N",
                   help="tile side in latent pixels (1 latent pixel = 8 image pixels); lower it if memory "
                        "runs out; 0 = no tiling (default: automatic, from free memory)")
    p.add_argument("--device", default="auto", metavar="DEVICE", help=DEVICE_HELP)
    p.add_argument("--dtype", choices=("auto", "float32", "float16", "bfloat16"), default="auto",
                   help="weights / compute precision (default: auto = float16 on a GPU, float32 on a CPU; "
                        "float16 is refused on a CPU, where it is about 10x slower)")
    p.add_argument("--runtime", choices=RUNTIME_NAMES, default="auto",
                   help="what runs the networks: " + "; ".join(f"{r.name} = {r.description}" for r in RUNTIMES.values())
                        + " (default: auto = the fastest one here; auto-exact = the fastest whose output is float32's "
                        "to rounding: docs/speed.md)")
    p.add_argument("--threads", type=positive_int, metavar="N",
                   help="CPU threads for the networks (default: PyTorch's default, one per core)")
    p.add_argument("--format", choices=("png", "jpg", "webp", "same"), default="png",
                   help="output format; 'same' keeps png / jpg / webp inputs' format, others become png "
                        "(default: png)")
    p.add_argument("--quality", type=quality_int, default=95, metavar="Q", help="JPEG / WebP quality, 1-100 (default: 95)")
    p.add_argument("--suffix", type=_suffix, metavar="TEXT", help="added to output file names (default: _x2 or _x4)")
    p.add_argument("--skip-existing", action="store_true", help="skip inputs whose output file already exists")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar and no summary (errors still print)")
    p.set_defaults(func=run, prog_name="flowup")
    return p


def _suffix(text: str) -> str:
    if "/" in text or os.sep in text or (os.altsep and os.altsep in text) or "\0" in text:
        raise argparse.ArgumentTypeError(f"must be part of a file name, without a path separator: {text!r}")
    return text


# --------------------------------------------------------------------------------------------
# inputs and outputs


@dataclass
class Job:
    """One input: its path, the output path planned for it, or the one-line error found up front."""

    source: Path
    target: Path | None = None
    error: str | None = None


@dataclass
class _Summary:
    done: int = 0
    skipped: int = 0
    failed: int = 0
    megapixels: float = 0.0


def _link_problem(path: Path) -> str | None:
    """"symlink loop" / "broken symlink" for such a path, else None."""
    if not path.is_symlink():
        return None
    try:
        path.stat()
    except OSError as err:
        return "symlink loop" if err.errno == errno.ELOOP else "broken symlink (its target does not exist)"
    return None


def expand_inputs(specs: list[str]) -> list[Job]:
    """Files, folders (their image files, sorted, not recursive) and glob patterns -> jobs.

    A pattern that matches nothing, a folder without images, a symlink loop or a broken symlink
    becomes a job with an error (the batch goes on).
    """
    from flowup.image_io import IMAGE_EXTENSIONS

    jobs: list[Job] = []
    seen: set[Path] = set()

    def add(path: Path, error: str | None = None) -> None:
        problem = None if error else _link_problem(path)
        if problem:
            error = f"{path}: {problem}"
        try:
            key = path.resolve() if error is None else path
        except (OSError, RuntimeError) as err:  # a loop further up the path
            key, error = path, f"{path}: cannot resolve ({one_line(err)})"
        if key not in seen:
            seen.add(key)
            jobs.append(Job(path, error=error))

    def is_image_name(p: Path) -> bool:
        return p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")

    for spec in specs:
        path = Path(spec).expanduser()
        if _link_problem(path):
            add(path)
        elif path.is_dir():
            try:
                entries = sorted(path.iterdir())
            except OSError as err:
                add(path, f"{path}: cannot list the folder ({err.strerror or one_line(err)})")
                continue
            images = [p for p in entries if is_image_name(p) and (p.is_file() or _link_problem(p))]
            if not images:
                add(path, f"{path}: folder holds no images ({', '.join(IMAGE_EXTENSIONS)})")
            for image in images:
                add(image)
        elif not path.exists() and glob.has_magic(spec):
            matches = sorted(Path(m) for m in glob.glob(str(path), recursive=True))
            matches = [m for m in matches if m.is_file() or (is_image_name(m) and _link_problem(m))]
            if not matches:
                add(path, f"{spec}: no files match this pattern")
            for match in matches:
                add(match)
        else:
            add(path)
    return jobs


def plan_outputs(jobs: list[Job], out: Path, single_file: bool, fmt: str, suffix: str) -> None:
    """Set each job's target path. Inputs of one name stem whose outputs would collide are named
    apart by their extension (``a.jpg`` -> ``a_jpg_x2.png``); a collision left after that (same
    file name in two folders) is an error for both, found here, before any work."""

    def target_for(job: Job, stem: str) -> Path:
        if single_file:
            return out
        name_format = _SAME_FORMAT.get(job.source.suffix.lower(), "png") if fmt == "same" else fmt
        return out / f"{stem}{suffix}{_EXTENSION[name_format]}"

    live = [job for job in jobs if not job.error]
    plain: dict[Path, list[Job]] = {}
    for job in live:
        plain.setdefault(target_for(job, job.source.stem), []).append(job)
    claimed: dict[Path, list[Job]] = {}
    for target, group in plain.items():
        stems = {job.source.suffix.lower() for job in group}
        if len(group) > 1 and len(stems) == len(group):  # a.jpg + a.png: name them apart
            for job in group:
                claimed.setdefault(target_for(job, f"{job.source.stem}_{job.source.suffix.lstrip('.').lower()}"), []).append(job)
        else:
            claimed.setdefault(target, []).extend(group)
    for target, group in claimed.items():
        if len(group) > 1:
            names = ", ".join(str(job.source) for job in group)
            for job in group:
                job.error = f"{job.source}: output {target} would also be the output of another input ({names}); " \
                            "upscale them into different folders"
            continue
        job = group[0]
        if target.exists() and job.source.exists() and target.resolve() == job.source.resolve():
            job.error = f"{job.source}: output would overwrite the input; use another -o or --suffix"
        else:
            job.target = target


# --------------------------------------------------------------------------------------------
# running


def _process_group(device: str):
    """Accelerate's ``PartialState`` under a multi-process launch (``WORLD_SIZE`` > 1), else None.
    CPU processes (``--device cpu``, or no accelerator) join a gloo group."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    try:
        from accelerate import PartialState
    except ImportError:
        raise UsageError("a multi-process launch (WORLD_SIZE > 1) needs accelerate: pip install accelerate") from None
    import torch

    cpu = device == "cpu" or (device == "auto" and not torch.cuda.is_available())
    return PartialState(cpu=cpu)


def run(args: argparse.Namespace) -> int:
    """``flowup upscale``: returns the exit status."""
    from flowup.image_io import remove_stale_temp_files

    started = time.perf_counter()
    suffix = f"_x{args.scale}" if args.suffix is None else args.suffix
    jobs = expand_inputs(args.inputs)
    out, single_file = check_output_location(args.output, len(jobs))
    plan_outputs(jobs, out, single_file, args.format, suffix)
    state = _process_group(args.device)
    main_process = state is None or state.is_main_process
    if main_process:
        remove_stale_temp_files(out.parent if single_file else out)
    if state is not None:  # every process planned the same jobs; each takes its own contiguous share
        with state.split_between_processes(jobs) as share:
            jobs = list(share)

    pending = [j for j in jobs if not j.error and not (args.skip_existing and j.target.exists())]
    pipe = load_pipeline(args, state) if pending else None

    from tqdm import tqdm

    from flowup.image_io import ImageReadError

    summary = _Summary()
    # One bar for the whole batch, in output megapixels of planned work, so that a single large
    # image moves it too (the pipeline reports its progress through tiles and stages).
    sizes = {id(job): _planned_megapixels(job, args.scale) for job in pending}
    bar = tqdm(total=max(sum(sizes.values()), 1e-6), unit="MP", disable=args.quiet or not main_process,
               file=sys.stderr,
               dynamic_ncols=True, bar_format="{l_bar}{bar}| {n:.1f}/{total:.1f} MP [{elapsed}<{remaining}] {postfix}")  # fmt: skip
    for job in jobs:
        if job.error:
            _fail(summary, job.error, bar)
            continue
        if args.skip_existing and job.target.exists():
            summary.skipped += 1
            continue
        bar.set_postfix_str(job.source.name, refresh=False)
        before, share = bar.n, sizes.get(id(job), 0.0)

        def progress(fraction: float, before=before, share=share) -> None:
            bar.update(before + fraction * share - bar.n)

        try:
            summary.megapixels += _upscale_one(pipe, job, args, progress) / 1e6
            summary.done += 1
        except ImageReadError as err:
            _fail(summary, str(err), bar)
        except Exception as err:  # noqa: BLE001 - one line per failed image, the batch goes on
            if is_out_of_memory(err):
                _fail(summary, _oom_message(job, args, err), bar)
            else:
                _fail(summary, f"{job.source}: {one_line(err)}", bar)
        bar.update(before + share - bar.n)
    bar.close()

    shares = [summary]
    if state is not None:
        from accelerate.utils import gather_object

        shares = gather_object([summary])
    total = _Summary(done=sum(s.done for s in shares), skipped=sum(s.skipped for s in shares),
                     failed=sum(s.failed for s in shares), megapixels=sum(s.megapixels for s in shares))  # fmt: skip
    if not args.quiet and main_process:
        seconds = time.perf_counter() - started
        where = f" by {len(shares)} processes ({', '.join(str(s.done) for s in shares)})" if len(shares) > 1 else ""
        parts = [f"{total.done} image{'s' if total.done != 1 else ''} upscaled ({total.megapixels:.2f} MP out){where}"]
        if total.skipped:
            parts.append(f"{total.skipped} skipped")
        parts.append(f"{total.failed} failed")
        print(f"flowup: {', '.join(parts)} in {seconds:.1f} s", flush=True)
    return EXIT_FAILED if total.failed else EXIT_OK


def _planned_megapixels(job: Job, scale: int) -> float:
    """Output megapixels of ``job`` from its header (0 when it cannot be read: it will fail)."""
    from PIL import Image

    try:
        with Image.open(job.source) as image:
            return image.width * image.height * scale**2 / 1e6
    except Exception:  # noqa: BLE001 - the real read reports the problem
        return 0.0


def _upscale_one(pipe, job: Job, args: argparse.Namespace, progress) -> int:
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
        progress_callback=progress,
        detail=args.detail,
        denoise=args.denoise,
    )
    rgb = result.images[0]
    alpha = upsample_alpha(loaded.alpha, args.scale) if loaded.alpha is not None else None
    image = tensor_to_pil(rgb, alpha, loaded.mode)
    save_image(image, job.target, quality=args.quality)
    return image.width * image.height


def load_pipeline(args: argparse.Namespace, state=None):
    """The model for ``args`` (``--model``, ``--device``, ``--dtype``, ``--runtime``, ``--threads``,
    and ``--denoise`` / ``--detail`` checked against it); ``state``: this process's share of a
    multi-process launch. Raises UsageError with a clear message."""
    import torch

    from flowup.loading import load_upscaler, resolve_device

    device = state.device if state is not None and args.device == "auto" else resolve_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    elif state is not None and device.type == "cpu":  # N processes on one machine share its cores
        local = int(os.environ.get("LOCAL_WORLD_SIZE", state.num_processes))
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // max(1, local)))
    pipe = load_upscaler(args.model, device, args.dtype, args.runtime)
    if getattr(args, "denoise", None) is not None:
        try:
            pipe.resolve_denoise(args.denoise)
        except ValueError as err:
            raise UsageError(f"--denoise: {err}") from None
    if isinstance(getattr(args, "detail", None), tuple):
        stages = pipe.stage_count(args.scale)
        if len(args.detail) != stages:
            given = ",".join(f"{d:g}" for d in args.detail)
            raise UsageError(f"--detail {given}: {len(args.detail)} values, but --scale {args.scale} runs "
                             f"{stages} stage{'s' if stages > 1 else ''} of this model (give one, or one per stage)")  # fmt: skip
    return pipe


def _oom_message(job: Job, args: argparse.Namespace, err: BaseException) -> str:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    smaller = max(16, (args.tile or 128) // 2)
    return (f"{job.source}: out of memory ({one_line(err)[:80]}); try --tile {smaller}"
            + ("" if args.device == "cpu" else ", or --device cpu"))  # fmt: skip


def _fail(summary: _Summary, message: str, bar) -> None:
    summary.failed += 1
    bar.write(f"flowup: error: {message}", file=sys.stderr)
