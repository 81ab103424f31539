"""``python -m eval bench``: flowup's speed beside its baselines and Real-ESRGAN, in one process.

Every row is timed the same way: a warm-up call at the row's own size (ONNX Runtime plans memory
per shape), then ``--repeats`` timed calls (``torch.cuda.synchronize`` around each on a GPU); the
median is reported as seconds per output megapixel, with the process's peak memory over the row
(:class:`eval.timing.PeakMemory`) and the ratio to flowup's default at the same scale and size.
A row stops after a timed call slower than ``--max-row-seconds`` (``n`` counts the timed calls).
Real-ESRGAN rows warm up on a 64² input (ncnn plans nothing per shape), all others at their own size.

Sections:

- ``x2`` / ``x4`` at each input size: flowup's default (the model's steps and back-projection, the
  runtime ``auto`` picks, :mod:`flowup.runtimes`), flowup on
  PyTorch float32 eager (the default before the fast paths), the other fast runtimes this machine
  can run (the int8 one among them; with each one's PSNR against float32), flowup's stages timed alone (encode / flow per NFE / decode /
  back-projection), PSU (flowup's source: bicubic + codec round trip), bicubic, and Real-ESRGAN
  through ncnn (:mod:`eval.realesrgan`): ``realesr-animevideov3-x2`` (compact; twice for x4) and
  ``realesrgan-x4plus`` (x4 native; its x2 row is the x4 output downsampled, as its tools do).
- ``levers`` (``--levers``): the three networks alone at one output megapixel under each engine
  (PyTorch eager, channels_last, bf16 autocast, ``torch.compile``, ONNX Runtime), with the PSNR of
  the decoded image against PyTorch float32: what decided the default.
- on CUDA, ``gpu``: float16 / bfloat16 / ``torch.compile`` rows, milliseconds per 1024² output and
  latent-only milliseconds (one NFE of the flow on a 128² latent).

Writes ``bench.json`` and ``bench.md`` to ``--out``. Example (about 20 minutes on 2 CPU cores)::

    python -m eval bench --out results/bench
    python -m eval bench --sizes 256 --x4-sizes 128 --repeats 1 --peers none   # a quick look
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch

from eval.timing import PeakMemory, synchronize
from flowup.errors import one_line

__all__ = ["BenchRow", "add_bench_arguments", "bench_image", "hardware_description", "run_bench"]

PEERS = ("compact", "x4plus")


@dataclass
class BenchRow:
    """One timed row: seconds of each call, and what they mean."""

    section: str
    size: int  # input side in pixels
    method: str
    output_pixels: int
    seconds: list[float] = field(default_factory=list)
    first_seconds: float | None = None  # the warm-up call, when it is the same call (a fresh shape)
    peak_mib: float = float("nan")
    nfe: int | None = None
    psnr_vs_torch: float | None = None  # dB against flowup's float32 PyTorch output
    note: str = ""
    ratio: float | None = None  # median over the section default's median per output MP
    gflop_per_mp: float | None = None  # stage rows: the step's arithmetic per output megapixel

    @property
    def median(self) -> float:
        return statistics.median(self.seconds) if self.seconds else float("nan")

    @property
    def s_per_mp(self) -> float:
        return self.median / (self.output_pixels / 1e6)


def add_bench_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", help="FlowUpPipeline folder (default: the shipped model)")
    p.add_argument("--sizes", type=int, nargs="+", default=[512, 1024], help="x2 input sides (default 512 1024)")
    p.add_argument("--x4-sizes", type=int, nargs="*", default=[256, 512],
                   help="x4 input sides (default 256 512: 1024² and 2048² outputs)")
    p.add_argument("--repeats", type=int, default=3, help="timed calls per row after warm-up (default 3)")
    p.add_argument("--max-row-seconds", type=float, default=120.0,
                   help="a row stops after a timed call slower than this (default 120)")
    p.add_argument("--threads", type=int, help="CPU threads for torch, ONNX Runtime and ncnn (default: torch's)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    p.add_argument("--peers", nargs="+", default=list(PEERS), choices=[*PEERS, "none"],
                   help="Real-ESRGAN models to time (default: compact x4plus)")
    p.add_argument("--no-torch-row", action="store_true",
                   help="skip the PyTorch float32 and other-runtime flowup rows")
    p.add_argument("--levers", action="store_true", help="also time the networks under each engine")
    p.add_argument("--lever-size", type=int, default=1024, help="output side of the --levers rows (default 1024)")
    p.add_argument("--out", default="results/bench", help="folder for bench.json and bench.md")


# --------------------------------------------------------------------------------------------
# timing


def _time_row(row: BenchRow, fn: Callable[[], object], device: str, repeats: int, max_seconds: float,
              warm_up: Callable[[], object] | None = None) -> object:  # fmt: skip
    """Warm up (``warm_up``, default ``fn`` itself), then time ``fn`` up to ``repeats`` times, stopping
    after a call slower than ``max_seconds``; fills ``row.seconds`` / ``row.peak_mib``; returns the result."""
    with PeakMemory(device) as peak:
        synchronize(device)
        start = time.perf_counter()
        result = (warm_up or fn)()
        synchronize(device)
        if warm_up is None:
            row.first_seconds = time.perf_counter() - start
        for index in range(repeats):
            synchronize(device)
            start = time.perf_counter()
            result = fn()
            synchronize(device)
            row.seconds.append(time.perf_counter() - start)
            if row.seconds[-1] > max_seconds and index + 1 < repeats:
                row.note = (row.note + "; " if row.note else "") + f"slow: timed {index + 1}x"
                break
    row.peak_mib = peak.mib
    return result


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = torch.mean((a.float().cpu() - b.float().cpu()) ** 2).item()
    return float("inf") if mse == 0 else -10 * math.log10(mse)


def bench_image(size: int) -> torch.Tensor:
    """The bundled photo resized to ``size`` x ``size`` (bicubic, 8-bit): ``(1, 3, size, size)``."""
    from PIL import Image

    from flowup.image_io import pil_to_tensor

    photo = Path(__file__).resolve().parents[1] / "flowup" / "assets" / "grace_hopper_256.jpg"
    image = Image.open(photo).convert("RGB").resize((size, size), Image.Resampling.BICUBIC)
    return pil_to_tensor(image).rgb[None]


# --------------------------------------------------------------------------------------------
# rows


def _flowup_rows(pipe, torch_pipe, full_pipe, section: str, scale: int, size: int, args,
                 device: str) -> list[BenchRow]:  # fmt: skip
    lr = bench_image(size).to(device)
    out_pixels = (scale * size) ** 2

    def call(p):
        return lambda: p(image=lr, scale=scale, generator=torch.Generator().manual_seed(0), output_type="pt")

    rows = []
    runtime = pipe.active_runtime()
    default = BenchRow(section, size, f"flowup default ({runtime})", out_pixels)
    out = _time_row(default, call(pipe), device, args.repeats, args.max_row_seconds)
    default.nfe = out.nfe
    rows.append(default)
    if full_pipe is not None:  # the model with the full-resolution TAEF2 codec instead of its lean one
        row = BenchRow(section, size, f"flowup, full-resolution TAEF2 codec ({full_pipe.active_runtime()})", out_pixels)
        full = _time_row(row, call(full_pipe), device, args.repeats, args.max_row_seconds)
        row.nfe = full.nfe
        row.note = f"default vs this: {_psnr(out.images, full.images):.1f} dB PSNR"
        rows.append(row)
    if torch_pipe is not None and not args.no_torch_row:
        eager = BenchRow(section, size, "flowup, PyTorch float32 eager (previous default)", out_pixels)
        reference = _time_row(eager, call(torch_pipe), device, args.repeats, args.max_row_seconds)
        eager.nfe = reference.nfe
        eager.psnr_vs_torch = float("inf")
        default.psnr_vs_torch = _psnr(out.images, reference.images)
        rows.append(eager)
        for other in _other_runtimes(torch_pipe, runtime):
            row = BenchRow(section, size, f"flowup, runtime {other}", out_pixels)
            torch_pipe.set_runtime(other)
            try:
                result = _time_row(row, call(torch_pipe), device, args.repeats, args.max_row_seconds)
            finally:
                torch_pipe.set_runtime("torch")
            row.nfe, row.psnr_vs_torch = result.nfe, _psnr(result.images, reference.images)
            rows.append(row)
    if scale == 2:
        rows += _stage_rows(pipe, lr, section, size, args, device)
        if full_pipe is not None:
            rows += _stage_rows(full_pipe, lr, section, size, args, device, codec_steps_only=True)
    return rows


def _other_runtimes(pipe, active: str) -> list[str]:
    """The runtimes other than ``active`` and ``torch`` that can run ``pipe`` here (inexact ones included)."""
    from flowup.runtimes import RUNTIMES, unavailable_reason

    return [name for name in RUNTIMES if name not in (active, "torch")
            and unavailable_reason(name, pipe.flow, pipe.codec, pipe.device) is None]  # fmt: skip


def _stage_rows(pipe, lr: torch.Tensor, section: str, size: int, args, device: str,
                codec_steps_only: bool = False) -> list[BenchRow]:  # fmt: skip
    """Each step of one x2 stage (:class:`flowup.stage.X2Stage`) timed alone, on the tensors a call
    makes, with its arithmetic per output megapixel (:func:`stage_gflop_per_mp`).
    ``codec_steps_only``: encode and decode only, labelled with the codec (the full TAEF2 beside a lean one)."""
    from flowup.back_projection import back_project
    from flowup.stage import StageSettings

    stage = pipe.x2_stage()
    out_pixels = (2 * size) ** 2
    x_up = stage.upsample(lr)
    gflops = stage_gflop_per_mp(pipe)
    prefix = "  stage (full TAEF2)" if codec_steps_only else "  stage"
    rows = []

    def timed(name: str, fn: Callable[[], torch.Tensor]) -> torch.Tensor:
        row = BenchRow(section, size, f"{prefix}: {name}", out_pixels, gflop_per_mp=gflops.get(name))
        rows.append(row)
        return _time_row(row, fn, device, args.repeats, args.max_row_seconds)

    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        cond = timed("encode", lambda: stage.encode(x_up))
        if not codec_steps_only:
            timed("flow (1 NFE)", lambda: stage.integrate(cond, [generator], StageSettings(steps=1))[0])
        image = timed("decode", lambda: stage.decode(cond, (2 * lr.shape[-2], 2 * lr.shape[-1])))
        steps = pipe.config.get("default_back_projection_steps", 0)
        if steps and not codec_steps_only:
            timed(f"back-projection ({steps} steps)", lambda: back_project(image, lr.float(), steps))
    return rows


def stage_gflop_per_mp(pipe, side: int = 128) -> dict[str, float]:
    """GFLOP per output megapixel of an x2 stage's ``encode``, ``flow (1 NFE)`` and ``decode``
    (multiply-adds count 2; PyTorch's :class:`~torch.utils.flop_counter.FlopCounterMode` on the
    float32 modules at a ``side``² input: convolutions and matrix products, linear in pixels)."""
    import copy

    from torch.utils.flop_counter import FlopCounterMode

    from flowup.resample import upsample

    codec = copy.deepcopy(pipe.codec).float().cpu().eval()
    flow = copy.deepcopy(pipe.flow).float().cpu().eval()
    x_up = upsample(bench_image(side).float(), 2)
    out_mp = x_up.shape[-2] * x_up.shape[-1] / 1e6
    counts = {}
    with torch.no_grad():
        latent = codec.encode(x_up)
        for name, fn in (("encode", lambda: codec.encode(x_up)), ("flow (1 NFE)", lambda: flow(latent, torch.zeros(1), latent)),
                         ("decode", lambda: codec.decode(latent))):  # fmt: skip
            with FlopCounterMode(display=False) as counter:
                fn()
            counts[name] = counter.get_total_flops() / 1e9 / out_mp
    return counts


def _baseline_rows(pipe, section: str, scale: int, size: int, args, device: str) -> list[BenchRow]:
    from flowup.back_projection import back_project
    from flowup.resample import upsample

    lr = bench_image(size).to(device)
    out_pixels = (scale * size) ** 2
    rows = []

    def psu() -> torch.Tensor:  # the pipeline without the flow: bicubic + codec round trip per stage
        return pipe(image=lr.float(), scale=scale, num_inference_steps=0, back_projection_steps=0, output_type="pt").images

    with torch.no_grad():
        row = BenchRow(section, size, f"PSU (bicubic + codec round trip, {pipe.active_runtime()})", out_pixels)
        _time_row(row, psu, device, args.repeats, args.max_row_seconds)
        rows.append(row)
        row = BenchRow(section, size, "bicubic", out_pixels)
        _time_row(row, lambda: upsample(lr.float(), scale), device, args.repeats, args.max_row_seconds)
        rows.append(row)
        row = BenchRow(section, size, "bicubic + 5 back-projection steps", out_pixels)
        _time_row(row, lambda: back_project(upsample(lr.float(), scale), lr.float(), 5), device, args.repeats,
                  args.max_row_seconds)  # fmt: skip
        rows.append(row)
    return rows


def _peer_rows(section: str, scale: int, size: int, args, peers: dict) -> list[BenchRow]:
    from flowup.resample import downsample

    lr = bench_image(size)
    small = bench_image(64)
    out_pixels = (scale * size) ** 2
    rows = []
    if "compact" in peers:
        model = peers["compact"]
        passes = round(math.log2(scale))

        def compact(x=lr):
            for _ in range(passes):
                x = model.upscale(x)
            return x

        label = "Real-ESRGAN compact (realesr-animevideov3-x2, ncnn)" + (" x2 twice" if passes == 2 else "")
        row = BenchRow(section, size, label, out_pixels, note=f"{model.threads} ncnn threads")
        _time_row(row, compact, "cpu", args.repeats, args.max_row_seconds, warm_up=lambda: compact(small))
        rows.append(row)
    if "x4plus" in peers:
        model = peers["x4plus"]

        def x4plus():
            out = model.upscale(lr)
            return out if scale == 4 else downsample(out, 2)

        label = "Real-ESRGAN x4plus (realesrgan-x4plus, ncnn)" + (", x4 then downsampled" if scale == 2 else "")
        row = BenchRow(section, size, label, out_pixels, note=f"{model.threads} ncnn threads")
        _time_row(row, x4plus, "cpu", args.repeats, args.max_row_seconds, warm_up=lambda: model.upscale(small))
        rows.append(row)
    return rows


def _lever_rows(pipe, args) -> list[BenchRow]:
    """The networks alone at ``--lever-size``² output (default 1024²: a 128² latent) under each engine."""
    import copy

    from flowup.onnx_runtime import load_engine

    size = args.lever_size
    image = bench_image(size).float()
    flow = copy.deepcopy(pipe.flow).float().eval()
    codec = copy.deepcopy(pipe.codec).float().eval()
    rows: list[BenchRow] = []
    with torch.no_grad():
        latent = codec.encode(image)
        reference = codec.decode(latent)
        t = torch.zeros(1)

        def add(engine: str, encode, velocity, decode, context=None) -> None:
            for name, fn in (("encode", lambda: encode(image)), ("flow (1 NFE)", lambda: velocity(latent, t, latent)),
                             ("decode", lambda: decode(latent))):  # fmt: skip
                row = BenchRow("levers", size // 2, f"{engine}: {name}", size * size)
                with context() if context else _null():
                    out = _time_row(row, fn, "cpu", args.repeats, args.max_row_seconds)
                if name == "decode":
                    row.psnr_vs_torch = _psnr(out.clamp(0, 1), reference)
                rows.append(row)

        add("PyTorch eager", codec.encode, flow, codec.decode)
        cl = torch.channels_last
        flow_cl = copy.deepcopy(flow).to(memory_format=cl)
        codec_cl = copy.deepcopy(codec).to(memory_format=cl)
        add("PyTorch channels_last", lambda x: codec_cl.encode(x.contiguous(memory_format=cl)),
            lambda x, s, c: flow_cl(x.contiguous(memory_format=cl), s, c.contiguous(memory_format=cl)),
            lambda z: codec_cl.decode(z.contiguous(memory_format=cl)))  # fmt: skip
        add("PyTorch channels_last + bf16 autocast", lambda x: codec_cl.encode(x.contiguous(memory_format=cl)),
            lambda x, s, c: flow_cl(x.contiguous(memory_format=cl), s, c.contiguous(memory_format=cl)),
            lambda z: codec_cl.decode(z.contiguous(memory_format=cl)).float(),
            context=lambda: torch.autocast("cpu", dtype=torch.bfloat16))  # fmt: skip
        engine = load_engine(flow, codec)  # before torch.compile, whose worker threads outlive its rows
        add("ONNX Runtime", lambda x: engine.encoder_stages.image_wide(engine.encoder_stages.local(x)),
            engine.velocity, lambda z: engine.decoder_stages.local(engine.decoder_stages.image_wide(z)))  # fmt: skip
        int8 = load_engine(flow, codec, int8=True)  # the flow stays float32: its row repeats the one above
        add("ONNX Runtime int8 codec", lambda x: int8.encoder_stages.image_wide(int8.encoder_stages.local(x)),
            int8.velocity, lambda z: int8.decoder_stages.local(int8.decoder_stages.image_wide(z)))  # fmt: skip
        try:
            encoder_c = torch.compile(codec.encoder)
            decoder_c = torch.compile(codec.decoder)
            flow_c = torch.compile(flow)
            add("torch.compile (inductor)", encoder_c, flow_c, lambda z: decoder_c(z).clamp(0, 1))
        except Exception as err:  # noqa: BLE001 - a compiler missing on this machine is a finding, not a crash
            rows.append(BenchRow("levers", size // 2, "torch.compile (inductor)", size * size,
                                 note=f"unavailable: {one_line(err)[:80]}"))  # fmt: skip
    return rows


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _gpu_rows(pipe_path, args, device: str) -> list[BenchRow]:
    """CUDA: float16 / bfloat16 / torch.compile end to end at 1024² output, and latent-only."""
    from flowup.pipeline import FlowUpPipeline

    rows = []
    lr = bench_image(512).to(device)
    for dtype, compiled in ((torch.float16, False), (torch.bfloat16, False), (torch.float16, True)):
        pipe = FlowUpPipeline.from_pretrained(pipe_path, torch_dtype=dtype, runtime="torch").to(device)
        pipe.set_progress_bar_config(disable=True)
        label = f"flowup x2 {str(dtype).removeprefix('torch.')}" + (" + torch.compile" if compiled else "")
        if compiled:
            pipe.flow = torch.compile(pipe.flow)
            pipe.codec.encoder = torch.compile(pipe.codec.encoder)
            pipe.codec.decoder = torch.compile(pipe.codec.decoder)
        row = BenchRow("gpu", 512, label, 1024 * 1024)
        try:
            _time_row(row, lambda: pipe(image=lr, generator=torch.Generator().manual_seed(0), output_type="pt"),
                      device, max(args.repeats, 10), args.max_row_seconds)  # fmt: skip
        except Exception as err:  # noqa: BLE001 - report and go on to the next row
            row.note = f"failed: {one_line(err)[:80]}"
        rows.append(row)
        flow = pipe.flow
        latent = torch.randn(1, pipe.codec.latent_channels, 128, 128, device=device, dtype=dtype)
        t = torch.zeros(1, device=device, dtype=dtype)
        row = BenchRow("gpu", 512, f"latent-only, 1 NFE on 128² ({label.removeprefix('flowup x2 ')})", 1024 * 1024)
        with torch.no_grad():
            _time_row(row, lambda: flow(latent, t, latent), device, max(args.repeats, 20), args.max_row_seconds)
        rows.append(row)
    return rows


# --------------------------------------------------------------------------------------------
# report


def _ratios(rows: list[BenchRow]) -> None:
    for row in rows:
        default = next((r for r in rows if r.section == row.section and r.size == row.size
                        and r.method.startswith("flowup default")), None)  # fmt: skip
        if default is not None and row.seconds and default.seconds:
            row.ratio = row.s_per_mp / default.s_per_mp


def _markdown(rows: list[BenchRow], header: dict) -> str:
    lines = [f"# flowup benchmark ({header['date']})", "",
             f"{header['hardware']}; {header['threads']}; torch {header['torch']}, onnxruntime "
             f"{header['onnxruntime']}, ncnn {header['ncnn']}; model {header['model']}. Median of the timed "
             "calls after one warm-up; first s = that warm-up call (the first call at this size); s/MP = seconds per output megapixel; GFLOP/MP = a stage step's arithmetic per output megapixel (2 per multiply-add, PyTorch's FlopCounterMode); ratio = s/MP over flowup "
             "default's at the same scale and input size; peak = process RSS high-water (CPU) or "
             "max_memory_allocated (CUDA) over the row.", "",
             f"Runtime {header['runtime']}, ready in {header['engine_seconds']} s before the first image "
             "(building the engine: ONNX Runtime loads its cached export, or exports on a machine's first run; "
             "the bfloat16 runtime makes its channels_last copies).", "",
             f"Command: `{header['command']}`", ""]  # fmt: skip
    for section in dict.fromkeys(r.section for r in rows):
        for size in dict.fromkeys(r.size for r in rows if r.section == section):
            group = [r for r in rows if r.section == section and r.size == size]
            out = int(math.sqrt(group[0].output_pixels))
            title = {"levers": f"levers: the networks alone at {out}² output"}.get(section, f"{section}: {size}² -> {out}²")
            lines += [f"## {title}", "", "| method | s/MP | ratio | GFLOP/MP | median s | first s | n | peak MiB | NFE | PSNR vs torch fp32 | note |",
                      "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]  # fmt: skip
            for r in group:
                psnr = "" if r.psnr_vs_torch is None else ("exact" if math.isinf(r.psnr_vs_torch) else f"{r.psnr_vs_torch:.1f} dB")
                ratio = "" if r.ratio is None else f"{r.ratio:.2f}x"
                ms = f"{r.s_per_mp:.2f}" if r.seconds else ""
                first = "" if r.first_seconds is None else f"{r.first_seconds:.3f}"
                gflop = "" if r.gflop_per_mp is None else f"{r.gflop_per_mp:.0f}"
                lines.append(f"| {r.method} | {ms} | {ratio} | {gflop} | {r.median:.3f} | {first} | {len(r.seconds)} | {r.peak_mib:.0f} | "
                             f"{'' if r.nfe is None else r.nfe} | {psnr} | {r.note} |")  # fmt: skip
            lines.append("")
    return "\n".join(lines)


def hardware_description(device: str) -> str:
    """The device every figure is measured on, e.g. ``CPU: AMD EPYC (2 cores, AVX512 with bf16, no
    AMX)``: the CPU's vector extension (PyTorch's dispatch level) and bfloat16 support say which of
    the runtimes' fast paths it has; a CUDA device by name."""
    if torch.device(device).type == "cuda":
        return torch.cuda.get_device_name(device)
    from flowup.bf16_runtime import cpu_has_amx

    vector = torch.backends.cpu.get_cpu_capability()
    bf16 = getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)()
    features = f"{vector}{' with bf16' if bf16 else ''}, {'with AMX' if cpu_has_amx() else 'no AMX'}"
    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"CPU: {name} ({os.cpu_count()} cores, {features})"


def _version(module: str) -> str:
    try:
        return __import__(module).__version__
    except Exception:  # noqa: BLE001
        return "not installed"


def run_bench(args: argparse.Namespace, command: str) -> int:
    from flowup.pipeline import FlowUpPipeline, default_model_path

    if args.threads:
        torch.set_num_threads(args.threads)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    model = Path(args.model) if args.model else default_model_path()
    pipe = FlowUpPipeline.from_pretrained(model).to(device)
    pipe.set_progress_bar_config(disable=True)
    torch_pipe = None
    if pipe.active_runtime() != "torch":
        torch_pipe = FlowUpPipeline.from_pretrained(model, runtime="torch").to(device)
        torch_pipe.set_progress_bar_config(disable=True)
    full_pipe = None
    if getattr(pipe.codec, "lean", False):  # the model's lean codec: time the full TAEF2 beside it
        from flowup.codecs import load_codec

        full_pipe = FlowUpPipeline.from_pretrained(model, codec=load_codec("taef2")).to(device)
        full_pipe.set_progress_bar_config(disable=True)
        full_pipe.engine()
    peers = {}
    if "none" not in args.peers and torch.device(device).type == "cpu":
        from eval.realesrgan import RealESRGAN

        names = {"compact": "realesr-animevideov3-x2", "x4plus": "realesrgan-x4plus"}
        peers = {key: RealESRGAN(names[key]) for key in args.peers}
    threads = f"{torch.get_num_threads()} torch / ONNX Runtime / ncnn threads"
    print(f"flowup bench: {hardware_description(device)}, {threads}, runtime {pipe.active_runtime()}", flush=True)
    start = time.perf_counter()
    pipe.engine()  # ONNX Runtime: export once per machine (cached), then open the sessions
    engine_seconds = time.perf_counter() - start

    rows: list[BenchRow] = []
    for scale, sizes in ((2, args.sizes), (4, args.x4_sizes or [])):
        for size in sizes:
            section = f"x{scale}"
            print(f"  {section} {size}² ...", flush=True)
            rows += _flowup_rows(pipe, torch_pipe, full_pipe, section, scale, size, args, device)
            rows += _baseline_rows(pipe, section, scale, size, args, device)
            rows += _peer_rows(section, scale, size, args, peers)
    if args.levers and torch.device(device).type == "cpu":
        print("  levers ...", flush=True)
        rows += _lever_rows(pipe, args)
    if torch.device(device).type == "cuda":
        print("  gpu ...", flush=True)
        rows += _gpu_rows(model, args, device)
    _ratios(rows)

    header = {
        "date": time.strftime("%Y-%m-%d"),
        "hardware": hardware_description(device),
        "threads": threads,
        "device": device,
        "torch": torch.__version__,
        "onnxruntime": _version("onnxruntime"),
        "ncnn": _version("ncnn"),
        "model": str(model),
        "runtime": pipe.active_runtime(),
        "engine_seconds": round(engine_seconds, 2),
        "command": command,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = {"header": header, "rows": [{**asdict(r), "median": r.median, "s_per_mp": r.s_per_mp} for r in rows]}
    (out / "bench.json").write_text(json.dumps(data, indent=2, default=str) + "\n")
    text = _markdown(rows, header)
    (out / "bench.md").write_text(text + "\n")
    print()
    print(text)
    print(f"results in {out}/ (bench.json, bench.md)")
    return 0
