"""Per-stage cost of ``BoostedTextToImage``: base model, base VAE decode, flowup (encode + ODE + decode).

Run from the repo root. ``--base`` is any diffusers text-to-image folder or hub id; ``--base tiny``
builds the tiny random Stable Diffusion of ``tests/test_generate.py``. ``--model`` is a
FlowUpPipeline folder; ``--model random`` builds the default flowup architecture
(``FlowUNet()`` with random weights, real TAEF2 codec): the flow stage's cost depends on the
architecture and the image size, not on the weights. One warm-up call, then ``--repeats`` timed calls;
medians are printed::

    python docs/scripts/stage_costs.py --base tiny --model random --base-size 256 --flow-steps 4
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from flowup.text_to_image import BoostedTextToImage  # noqa: E402


def _load_base(spec: str, device: torch.device, dtype: torch.dtype):
    if spec == "tiny":
        sys.path.insert(0, str(ROOT / "tests"))
        from test_generate import make_tiny_sd

        return make_tiny_sd(Path(tempfile.mkdtemp())).to(device, dtype)
    from flowup.loading import load_base_pipeline

    return load_base_pipeline(spec, dtype=dtype).to(device)


def _load_flowup(spec: str, device: torch.device):
    from flowup import FlowUNet, FlowUpPipeline, load_codec

    if spec == "random":
        pipe = FlowUpPipeline(flow=FlowUNet().eval(), codec=load_codec("taef2"), codec_spec="taef2")
    else:
        pipe = FlowUpPipeline.from_pretrained(spec)
    return pipe.to(device)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="tiny")
    parser.add_argument("--model", default="random")
    parser.add_argument("--base-size", type=int, default=256)
    parser.add_argument("--base-steps", type=int, default=None)
    parser.add_argument("--flow-steps", type=int, default=4)
    parser.add_argument("--solver", default="euler")
    parser.add_argument("--scale", type=int, default=2)
    parser.add_argument("--upsample-in", default="pixels", choices=("pixels", "latents"))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="float32", choices=("float32", "float16", "bfloat16"))
    args = parser.parse_args(argv)
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)

    base = _load_base(args.base, device, dtype)
    base.set_progress_bar_config(disable=True)
    flowup = _load_flowup(args.model, device)
    flowup.set_progress_bar_config(disable=True)
    chain = BoostedTextToImage(base, flowup, upsample_in=args.upsample_in)
    kwargs = dict(base_size=args.base_size, scale=args.scale, num_inference_steps=args.base_steps,
                  flow_steps=args.flow_steps, solver=args.solver, output_type="pt")
    chain("a cat", generator=torch.Generator().manual_seed(0), **kwargs)  # warm-up
    runs = [chain("a cat", generator=torch.Generator().manual_seed(i), **kwargs) for i in range(args.repeats)]

    def median(name: str) -> float:
        return statistics.median(getattr(r.timings, name) for r in runs)

    size = args.base_size
    threads = torch.get_num_threads()
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {threads} torch threads"
    print(f"{args.base} -> {size}x{size}, flowup {args.model} x{args.scale} -> {size * args.scale}px, "
          f"{args.solver} {args.flow_steps} steps (NFE {runs[0].nfe}), upsample in {args.upsample_in}, "
          f"{where}, {args.dtype}, median of {args.repeats}")
    print(f"base {median('base'):.3f} s | base VAE decode {median('base_decode'):.3f} s | "
          f"flowup {median('flow'):.3f} s | total {median('total'):.3f} s")
    print("flowup call, split by timing its components alone (untiled) on one base image:")
    print("  " + _flowup_breakdown(flowup, runs[0].base_images[:1].to(device), args.repeats))


def _flowup_breakdown(pipe, image: torch.Tensor, repeats: int) -> str:
    """Median seconds of flowup's codec encode, one velocity evaluation and codec decode at this size."""
    import time

    from flowup.resample import upsample

    def timed(fn):
        times = []
        for _ in range(repeats + 1):  # first call is a warm-up
            if image.device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            result = fn()
            if image.device.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
        return result, statistics.median(times[1:])

    with torch.no_grad():
        cond, t_enc = timed(lambda: pipe.codec.encode(upsample(image.float(), 2)))
        t = torch.full((1,), 0.5, device=image.device)
        _, t_nfe = timed(lambda: pipe.flow(cond, t, cond))
        _, t_dec = timed(lambda: pipe.codec.decode(cond))
    return f"codec encode {t_enc:.3f} s | one velocity evaluation {t_nfe:.3f} s | codec decode {t_dec:.3f} s"


if __name__ == "__main__":
    main()
