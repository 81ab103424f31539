"""Command line: ``python -m eval run ...`` and ``python -m eval t2i ...``.

Examples::

    python -m eval run --config configs/eval/set14.yaml
    python -m eval run --hr ../shared/data/val/Set14 --methods bicubic psu codec-hr flowup:euler:4 \\
        --scale 2 --out results/set14
    python -m eval t2i --config configs/eval/t2i_sd15_vs_lcm_sdxl.yaml
    python -m eval bench --out results/bench
    python -m eval native --images ../shared/data/val/Generated24 --methods bicubic flowup realesrgan-compact-x2

Flags override the config file. Errors (unknown method, missing folder, missing weights) print one
line and exit with status 2.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from flowup.errors import one_line

__all__ = ["main", "build_parser"]


def _add_run_arguments(p: argparse.ArgumentParser) -> None:
    from eval.methods import RUNTIME_HELP

    p.add_argument("--config", help="YAML file of options (keys as the flags, '_' or '-')")
    p.add_argument("--hr", nargs="+", metavar="DIR", help="folder(s) of high-res images")
    p.add_argument(
        "--methods", nargs="+", metavar="METHOD",
        help="bicubic lanczos latent-bilinear psu codec-hr flowup[@PATH][:SOLVER[:STEPS]] sd-upscale sd-latent-upscale "
        "realesrgan-x4plus realesrgan-compact-x2; "
        "LABEL=SPEC names a row",
    )  # fmt: skip
    p.add_argument("--scale", type=int, help="2 or 4 (default 2)")
    p.add_argument("--out", help="results folder (default results/<config name> or results/eval)")
    p.add_argument("--model", help="FlowUpPipeline folder for 'flowup' (default: the shipped model)")
    p.add_argument("--codec", help="codec of psu / latent-bilinear / codec-hr (default taef2)")
    p.add_argument("--limit", type=int, help="evaluate the first N images only")
    p.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    p.add_argument("--runtime", help=RUNTIME_HELP)
    p.add_argument("--repeats", type=int, help="timed runs per image, median reported (default 1)")
    p.add_argument("--seed", type=int, help="noise seed of generative methods (default 0)")
    p.add_argument("--crop", choices=["center", "topleft"], help="anchor of the crop to a multiple of 8*scale")
    p.add_argument("--degrade", metavar="PROFILE",
                   help="how the low-res input is made from each high-res image: clean (Pillow bicubic, 8 bits; default), "
                   "jpeg (+ JPEG q75), noise (+ Gaussian noise, 5 levels), generator (softened, grained, JPEG q85: "
                   "like a generator's output); flowup/degradations.py; torch-float: the float input of tables made before "
                   "2026-12-07")
    p.add_argument("--fid-features", help="TorchScript FID feature extractor file, or 'none' to skip FID/KID")
    p.add_argument("--patch-size", type=int, help="patch-FID grid size (default 256)")
    p.add_argument("--kid-subsets", type=int, help="KID subsets (default 100)")
    p.add_argument("--num-crops", type=int, help="images shown side by side (default 4)")
    p.add_argument("--crop-size", type=int, help="side of the shown crops in high-res px (default 128)")
    p.add_argument("--save-images", action="store_true", default=None, help="also write every output PNG")
    p.add_argument("--sd-upscaler", help="diffusers upscaler path or hub id for sd-upscale / sd-latent-upscale")
    p.add_argument("--sd-prompt", help="prompt given to the diffusers upscalers (default empty)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m eval", description="Evaluate flowup against baselines.")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_run_arguments(sub.add_parser("run", help="super-resolution benchmark on a folder of high-res images"))
    from eval.t2i import add_t2i_arguments

    add_t2i_arguments(sub.add_parser("t2i", help="text-to-image: base model + flowup vs direct high-res generation"))
    from eval.native import add_native_arguments

    add_native_arguments(sub.add_parser("native", help="no-reference: native low-res images (a generator's outputs), "
                                        "flat-area noise and edge sharpness against bicubic, side-by-side crops"))
    from eval.bench import add_bench_arguments

    add_bench_arguments(sub.add_parser("bench", help="speed: flowup vs baselines and Real-ESRGAN, one process"))
    return parser


def _run(args: argparse.Namespace, command: str) -> int:
    from eval.harness import EvalConfig, load_config, run_evaluation
    from eval.methods import parse_method
    from eval.report import write_reports

    overrides = {
        k: v for k, v in vars(args).items() if k not in ("config", "command") and v is not None
    }
    overrides["command"] = command
    if args.config:
        config = load_config(args.config, **overrides)
        if "out" not in overrides and config.out == EvalConfig.out:
            config.out = str(Path("results") / Path(args.config).stem)
    else:
        if not args.hr:
            raise ValueError("give --hr DIR (or --config FILE)")
        config = EvalConfig(**overrides)
    for method in config.methods:
        parse_method(method)  # unknown methods fail before anything is loaded
    result = run_evaluation(config)
    files = write_reports(result)
    print()
    print(files["table"])
    for name, why in result.unavailable.items():
        print(f"{name}: unavailable ({why})")
    print(f"\nfeature extractor: {result.feature_extractor}")
    print(f"results in {config.out}/ (report.md, summary.json/csv, per_image.json/csv, plots/, crops/)")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    args = parser.parse_args(argv)
    command = "python -m eval " + " ".join(shlex.quote(a) for a in argv)
    from flowup.weights import WeightsNotFoundError

    try:
        if args.command == "run":
            return _run(args, command)
        if args.command == "native":
            from eval.native import run_native_command

            return run_native_command(args, command)
        if args.command == "bench":
            from eval.bench import run_bench

            return run_bench(args, command)
        from eval.t2i import run_t2i_command

        return run_t2i_command(args, command)
    except (ValueError, OSError, WeightsNotFoundError, RuntimeError) as err:
        message = one_line(err)
        print(f"python -m eval: error: {message}", file=sys.stderr)
        return 2
