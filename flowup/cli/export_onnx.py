"""``flowup export-onnx MODEL_DIR OUT_DIR``: write a model's networks as ONNX graphs."""

from __future__ import annotations

import argparse
from pathlib import Path

from flowup.cli.common import EXIT_OK, UsageError

__all__ = ["register", "run"]


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``export-onnx`` subcommand (handler in ``func``)."""
    p = subparsers.add_parser(
        "export-onnx",
        help="write a model's networks as ONNX graphs",
        description="Export a flowup model's velocity networks and codec to ONNX (float32, dynamic batch "
                    "and spatial sizes): flow.onnx (and cascade_flow.onnx where the model has one), encoder.onnx, decoder.onnx, the codec halves that "
                    "tiled inference runs (encoder_local / encoder_image_wide / decoder_image_wide / "
                    "decoder_local) and onnx_manifest.json.",
        epilog="examples:\n  flowup export-onnx flowup/pretrained/taef2-x2 onnx/taef2-x2\n"
               "  flowup export-onnx flowup/pretrained/taef2-x2 onnx/taef2-x2-int8 --int8\n\n"
               "flow.onnx takes x_t (N, C, h, w), t (N,) and cond (N, C, h, w); see docs/speed.md.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    p.add_argument("model", metavar="MODEL_DIR", help="model folder saved by FlowUpPipeline.save_pretrained")
    p.add_argument("out", metavar="OUT_DIR", help="folder to write the .onnx files to (created if needed)")
    p.add_argument("--int8", action="store_true",
                   help="quantize the codec's and the flow's convolutions to 8-bit integers, as the int8 "
                        "runtime runs them (docs/speed.md)")
    p.set_defaults(func=run, prog_name="flowup")
    return p


def run(args: argparse.Namespace) -> int:
    """``flowup export-onnx``: returns the exit status."""
    out = Path(args.out).expanduser()
    if out.exists() and not out.is_dir():
        raise UsageError(f"{args.out} exists and is not a folder")
    from flowup.loading import load_upscaler
    from flowup.onnx_runtime import export_onnx

    pipe = load_upscaler(args.model, device="cpu", dtype="float32", runtime="torch")
    extra = {"cascade_flow": pipe.cascade_flow} if pipe.cascade_flow is not None else None
    flow = pipe.flow_at(pipe.resolve_denoise(None))  # the network a default call runs
    paths = export_onnx(flow, pipe.codec, out, joined=True, int8=args.int8,
                        noise_alpha=pipe.config.noise_alpha, factor=int(pipe.config.scale_factor), extra_flows=extra)  # fmt: skip
    for path in paths.values():
        print(f"{path}  ({path.stat().st_size / 2**20:.1f} MiB)")
    print(f"{out / 'onnx_manifest.json'}")
    return EXIT_OK
