"""The methods an evaluation compares, by name, in an extensible registry.

A method spec is a string ``[LABEL=]FAMILY[@PATH][:ARG...]``:

==========================  ==================================================================
``bicubic[:bpN]``           :func:`flowup.resample.upsample` (bicubic, clamped); ``bicubic:bp5``
                            adds 5 back-projection steps (classical iterative back-projection)
``lanczos``                 PIL's Lanczos resize (8-bit in, float out)
``latent-bilinear``         codec latent of the low-res image, bilinear ``F.interpolate`` in
                            latent space, decoded (the weak source flowup does not use)
``psu[:bpN]``               codec round trip of the bicubic upsample: flowup's source, no flow
                            (``psu:bp5``: then 5 back-projection steps, flowup's default minus the flow)
``codec-hr``                codec round trip of the high-res image itself: the ceiling of any
                            method working in that latent space (it *sees the answer*)
``flowup[:SOLVER[:STEPS[:bpN]]]``  the shipped default model (or ``--model``); ``flowup:euler:4``,
                            ``flowup:dopri5``, ``flowup:euler:1:bp0`` (N back-projection steps,
                            :mod:`flowup.back_projection`), ``flowup:euler:1:bp5:d0.5`` (half the
                            detail the flow adds: the pipeline's ``detail``; ``d1,0.5``: one per
                            stage at x4), ``flowup:ibp5`` (x4:
                            5 back-projection steps of the output onto the input itself),
                            ``flowup:int8`` / ``flowup:fp32`` (the ``onnx-int8`` runtime,
                            :mod:`flowup.onnx_int8`, / float32 ONNX Runtime instead of the run's,
                            :data:`EVAL_RUNTIME` unless told), ``flowup:dn0`` (the pipeline's
                            ``denoise``, 0 to 1: :mod:`flowup.denoise`), ``flowup:taef2`` (the full-resolution
                            TAEF2 codec instead of the model's lean one); without arguments the
                            model's defaults
``flowup@PATH[:SOLVER[:STEPS[:bpN]]]``  any FlowUpPipeline folder, e.g. a distilled student
``sd-upscale[:STEPS]``      diffusers ``StableDiffusionUpscalePipeline`` (x4) from ``--sd-upscaler``
``sd-latent-upscale[:STEPS]``  diffusers ``StableDiffusionLatentUpscalePipeline`` (x2) from
                            ``--sd-upscaler`` (or ``sd-latent-upscale@PATH``)
``realesrgan-x4plus``       Real-ESRGAN x4plus (RRDBNet) through ncnn (:mod:`eval.realesrgan`);
                            at x2 its x4 output downsampled (antialiased bicubic), as its tools do
``realesrgan-compact-x2``   Real-ESRGAN compact (``realesr-animevideov3-x2``, SRVGGNetCompact)
                            through ncnn; at x4 applied twice
==========================  ==================================================================

``LABEL=`` names the row in reports (default: the spec itself), e.g.
``student-1step=flowup@runs/distill/model:euler:1``. A model folder may hold a ``training.json``
(e.g. ``{"wall_clock_hours": 3.5, "hardware": "1x H100"}``) that reports show as the method's
training cost. New families are added with :func:`register_method`.

Every method maps a low-res batch ``(1, 3, h, w)`` in [0, 1] (and, for ``codec-hr`` only, the
high-res image) to ``(1, 3, scale*h, scale*w)`` in [0, 1], and reports its NFE (network
evaluations per image: 0 for resamplers, 1 per codec pass is *not* counted) and parameter count.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from flowup.back_projection import back_project
from flowup.errors import one_line
from flowup.resample import upsample
from flowup.runtimes import AUTO_EXACT, RUNTIME_NAMES

__all__ = [
    "MethodSpec",
    "MethodContext",
    "Method",
    "UnknownMethodError",
    "parse_method",
    "register_method",
    "build_method",
    "method_families",
    "read_training_cost",
]

SOLVERS = ("euler", "midpoint", "rk4", "dopri5")


class UnknownMethodError(ValueError):
    """A method spec names no registered family or has malformed arguments."""


@dataclass
class MethodSpec:
    """A parsed method spec: ``label``, ``family``, optional ``path`` and ``args`` (after ':')."""

    text: str
    label: str
    family: str
    path: str | None = None
    args: list[str] = field(default_factory=list)


#: What runs a run's flowup and PSU rows unless told (``--runtime``): float32's output to rounding,
#: whatever ``auto`` picks for the product, so tables measure the model (:mod:`flowup.runtimes`).
EVAL_RUNTIME = AUTO_EXACT
#: Row arguments that run a flowup row on a runtime of its own, whatever the run's: ``int8`` the
#: ``onnx-int8`` runtime, ``fp32`` float32 ONNX Runtime (PyTorch float32's output to rounding).
RUNTIME_ARGS = {"int8": "onnx-int8", "fp32": "onnx"}
#: ``--runtime``'s help in ``eval run`` and ``eval native``.
RUNTIME_HELP = (f"what runs the flowup and PSU rows: {', '.join(RUNTIME_NAMES)} (default {EVAL_RUNTIME}: the fastest "
                "runtime with float32's output; auto is the product's, int8 on CPUs without AMX); a row's "
                f"{' / '.join(':' + a for a in RUNTIME_ARGS)} overrides it")  # fmt: skip


@dataclass
class MethodContext:
    """What methods share: scale, device, codec, default model, diffusers upscaler, seed.

    ``codec`` may be set directly (tests use a random ``TAEF2Codec``); otherwise it is loaded once
    from ``codec_spec`` by :meth:`get_codec`.
    """

    scale: int = 2
    device: str = "cpu"
    model: str | None = None
    codec_spec: str | None = "taef2"
    codec: nn.Module | None = None
    sd_upscaler: str | None = None
    sd_prompt: str = ""
    seed: int = 0
    runtime: str = EVAL_RUNTIME  # FlowUpPipeline runtime of the flowup rows and PSU (tests pin "torch")

    def get_codec(self) -> nn.Module:
        if self.codec is None:
            from flowup.codecs import load_codec

            self.codec = load_codec(self.codec_spec)
        return self.codec.to(self.device).eval()


class Method:
    """Base class: ``upscale(lr, hr) -> (1, 3, H, W)``; ``nfe`` is set by the last call."""

    def __init__(self, spec: MethodSpec, ctx: MethodContext):
        self.spec = spec
        self.ctx = ctx
        self.nfe: int = 0
        self.training_cost: dict | None = None

    @property
    def label(self) -> str:
        return self.spec.label

    @property
    def parameter_count(self) -> int:
        return sum(p.numel() for m in self.modules() for p in m.parameters())

    def modules(self) -> list[nn.Module]:
        """The networks the method runs (for the parameter count)."""
        return []

    def upscale(self, lr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:  # pragma: no cover - interface
        raise NotImplementedError


def _no_args(spec: MethodSpec) -> None:
    if spec.args or spec.path:
        raise UnknownMethodError(f"method {spec.family!r} takes no '@PATH' or ':ARG' ({spec.text!r})")


def _back_projection_arg(text: str, arg: str) -> int:
    """``bpN`` -> N (back-projection steps, :mod:`flowup.back_projection`)."""
    if not (arg.startswith("bp") and arg[2:].isdigit()):
        raise UnknownMethodError(f"{text!r}: back-projection must be bpN (N >= 0 steps), got {arg!r}")
    return int(arg[2:])


def _only_back_projection(spec: MethodSpec) -> int:
    """Back-projection steps of a baseline that takes nothing but an optional ``:bpN``."""
    if spec.path or len(spec.args) > 1:
        raise UnknownMethodError(f"method {spec.family!r} takes only an optional ':bpN' ({spec.text!r})")
    return _back_projection_arg(spec.text, spec.args[0]) if spec.args else 0


# ---------------------------------------------------------------------------------------------
# Pixel-space resamplers


class Bicubic(Method):
    def __init__(self, spec: MethodSpec, ctx: MethodContext):
        self.back_projection_steps = _only_back_projection(spec)
        super().__init__(spec, ctx)

    def upscale(self, lr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
        lr = lr.to(self.ctx.device)
        return back_project(upsample(lr, self.ctx.scale), lr, self.back_projection_steps)


class Lanczos(Method):
    def __init__(self, spec: MethodSpec, ctx: MethodContext):
        _no_args(spec)
        super().__init__(spec, ctx)

    def upscale(self, lr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
        array = (lr[0].clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255).round().astype(np.uint8)
        image = Image.fromarray(array)
        out = image.resize((image.width * self.ctx.scale, image.height * self.ctx.scale), Image.Resampling.LANCZOS)
        return torch.from_numpy(np.asarray(out, dtype=np.float32) / 255).permute(2, 0, 1)[None].to(self.ctx.device)


# ---------------------------------------------------------------------------------------------
# Codec baselines


class _CodecMethod(Method):
    takes_back_projection = False

    def __init__(self, spec: MethodSpec, ctx: MethodContext):
        if self.takes_back_projection:
            self.back_projection_steps = _only_back_projection(spec)
        else:
            _no_args(spec)
        super().__init__(spec, ctx)
        self.codec = ctx.get_codec()

    def modules(self) -> list[nn.Module]:
        return [self.codec]


class LatentBilinear(_CodecMethod):
    @torch.no_grad()
    def upscale(self, lr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
        z = self.codec.encode(lr.to(self.ctx.device))
        z = F.interpolate(z, scale_factor=self.ctx.scale, mode="bilinear", align_corners=False)
        return self.codec.decode(z).float()


class PSU(_CodecMethod):
    """flowup's source with no flow: the model's pipeline at ``num_inference_steps=0`` (the same
    padding, tiling, runtime and back-projection as the flowup rows), with this run's codec. x4 is
    the cascade of two such x2 stages, as flowup's x4 is."""

    takes_back_projection = True

    def __init__(self, spec: MethodSpec, ctx: MethodContext):
        super().__init__(spec, ctx)
        from flowup.pipeline import FlowUpPipeline, default_model_path

        folder = ctx.model or default_model_path()
        pipe = FlowUpPipeline.from_pretrained(folder, codec=self.codec, runtime=ctx.runtime)
        self.pipe = pipe.to(ctx.device)
        self.pipe.set_progress_bar_config(disable=True)

    @torch.no_grad()
    def upscale(self, lr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
        out = self.pipe(image=lr.to(self.ctx.device), scale=self.ctx.scale, num_inference_steps=0, output_type="pt",
                        back_projection_steps=self.back_projection_steps)  # fmt: skip
        return out.images.float()


class CodecHR(_CodecMethod):
    @torch.no_grad()
    def upscale(self, lr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
        return self.codec.decode(self.codec.encode(hr.to(self.ctx.device))).float()


# ---------------------------------------------------------------------------------------------
# flowup


def read_training_cost(folder: str | Path) -> dict | None:
    """The ``training.json`` beside a model (wall-clock hours, hardware ...), or None."""
    path = Path(folder) / "training.json"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ValueError(f"{path}: unreadable training.json ({err})") from None


def _detail_arg(spec: MethodSpec) -> tuple[list[str], float | tuple[float, ...] | None]:
    """Split a trailing ``dX`` (the pipeline's ``detail``, 0 to 2) or ``dX,Y`` (one per stage) off
    the arguments."""
    args = list(spec.args)
    if args and args[-1].startswith("d") and args[-1] not in SOLVERS:
        try:
            values = tuple(float(v) for v in args[-1][1:].split(","))
        except ValueError:
            raise UnknownMethodError(f"{spec.text!r}: detail must be dX or dX,Y with X, Y in [0, 2], got {args[-1]!r}") from None
        if not all(0 <= v <= 2 for v in values):
            raise UnknownMethodError(f"{spec.text!r}: detail must be in [0, 2], got {args[-1][1:]}")
        return args[:-1], values[0] if len(values) == 1 else values
    return args, None  # the pipeline's default


def _input_back_projection_arg(spec: MethodSpec) -> tuple[MethodSpec, int]:
    """Split an ``ibpN`` argument (the pipeline's ``input_back_projection_steps``, x4) off the arguments."""
    found = [a for a in spec.args if a.startswith("ibp")]
    if not found:
        return spec, 0
    if len(found) > 1 or not found[0][3:].isdigit():
        raise UnknownMethodError(f"{spec.text!r}: input back-projection must be one ibpN (N >= 0 steps)")
    return dataclasses.replace(spec, args=[a for a in spec.args if a != found[0]]), int(found[0][3:])


def _denoise_arg(spec: MethodSpec) -> tuple[MethodSpec, float | None]:
    """Split a ``dnS`` argument (the pipeline's ``denoise``, 0 to 1) off the arguments."""
    found = [a for a in spec.args if a.startswith("dn")]
    if not found:
        return spec, None
    try:
        value = float(found[0][2:])
    except ValueError:
        value = -1.0
    if len(found) > 1 or not 0 <= value <= 1:
        raise UnknownMethodError(f"{spec.text!r}: denoise must be one dnS with S in [0, 1], got {found}")
    return dataclasses.replace(spec, args=[a for a in spec.args if a != found[0]]), value


def _full_codec_arg(spec: MethodSpec) -> tuple[MethodSpec, bool]:
    """Split a ``taef2`` argument (run this row with the full-resolution TAEF2 codec instead of
    the model's own, e.g. its lean codec) off the arguments."""
    if "taef2" not in spec.args:
        return spec, False
    return dataclasses.replace(spec, args=[a for a in spec.args if a != "taef2"]), True




def _runtime_arg(spec: MethodSpec) -> tuple[MethodSpec, str | None]:
    """Split a :data:`RUNTIME_ARGS` argument off the arguments: ``(rest, runtime or None)``."""
    chosen = [a for a in spec.args if a in RUNTIME_ARGS]
    if len(chosen) > 1:
        raise UnknownMethodError(f"{spec.text!r}: at most one of {', '.join(RUNTIME_ARGS)}")
    if not chosen:
        return spec, None
    return dataclasses.replace(spec, args=[a for a in spec.args if a not in RUNTIME_ARGS]), RUNTIME_ARGS[chosen[0]]


def _solver_args(spec: MethodSpec) -> tuple[str | None, int | None, int | None, float | None, int]:
    """``(solver, steps, back_projection_steps, detail, input_back_projection_steps)`` from
    ``:SOLVER[:STEPS[:bpN]][:ibpN][:dX]``, None (ibp: 0) where not given."""
    spec, input_back_projection = _input_back_projection_arg(spec)
    args, detail = _detail_arg(spec)
    if len(args) > 3:
        raise UnknownMethodError(f"{spec.text!r}: expected {spec.family}[@PATH][:SOLVER[:STEPS[:bpN]]][:dX]")
    spec = dataclasses.replace(spec, args=args)
    solver = spec.args[0] if spec.args else None
    if solver is not None and solver not in SOLVERS:
        raise UnknownMethodError(f"{spec.text!r}: unknown solver {solver!r}; choose one of {', '.join(SOLVERS)}")
    steps = None
    if len(spec.args) >= 2:
        if not spec.args[1].isdigit() or int(spec.args[1]) < 1:
            raise UnknownMethodError(f"{spec.text!r}: steps must be a positive integer, got {spec.args[1]!r}")
        steps = int(spec.args[1])
    back_projection = _back_projection_arg(spec.text, spec.args[2]) if len(spec.args) == 3 else None
    return solver, steps, back_projection, detail, input_back_projection


class FlowUp(Method):
    """A :class:`flowup.FlowUpPipeline` folder (``@PATH``, else ``--model``, else the shipped default)."""

    def __init__(self, spec: MethodSpec, ctx: MethodContext, pipeline=None):
        super().__init__(spec, ctx)
        spec, runtime = _runtime_arg(spec)
        spec, full_codec = _full_codec_arg(spec)
        spec, self.denoise = _denoise_arg(spec)
        self.solver, self.steps, self.back_projection_steps, self.detail, self.input_back_projection_steps = (
            _solver_args(spec)
        )
        if pipeline is None:
            from flowup.pipeline import FlowUpPipeline, default_model_path

            folder = spec.path or ctx.model or default_model_path()
            if not Path(folder).is_dir():
                raise FileNotFoundError(f"flowup model folder {folder} does not exist")
            codec = None
            if full_codec:
                from flowup.codecs import load_codec

                codec = load_codec("taef2")
            pipeline = FlowUpPipeline.from_pretrained(folder, codec=codec, runtime=ctx.runtime)
            self.training_cost = read_training_cost(folder)
        self.pipe = pipeline.to(ctx.device)
        if runtime is not None:  # this row only, whatever the run's runtime
            self.pipe.set_runtime(runtime)
        self.pipe.set_progress_bar_config(disable=True)

    def modules(self) -> list[nn.Module]:
        return [m for m in self.pipe.components.values() if isinstance(m, nn.Module)]

    @torch.no_grad()
    def upscale(self, lr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
        generator = torch.Generator(device="cpu").manual_seed(self.ctx.seed)
        out = self.pipe(
            image=lr.to(self.ctx.device),
            scale=self.ctx.scale,
            num_inference_steps=self.steps,
            solver=self.solver,
            generator=generator,
            output_type="pt",
            back_projection_steps=self.back_projection_steps,
            detail=self.detail,
            input_back_projection_steps=self.input_back_projection_steps,
            denoise=self.denoise,
        )
        self.nfe = int(out.nfe)
        return out.images.float()


# ---------------------------------------------------------------------------------------------
# diffusers upscalers


class _DiffusersUpscaler(Method):
    """Shared loading code of the diffusers upscalers (by local path or hub id)."""

    pipeline_class_name: str
    native_scale: int
    default_steps: int

    def __init__(self, spec: MethodSpec, ctx: MethodContext, pipeline=None):
        super().__init__(spec, ctx)
        if len(spec.args) > 1 or (spec.args and not spec.args[0].isdigit()):
            raise UnknownMethodError(f"{spec.text!r}: expected {spec.family}[@PATH][:STEPS]")
        self.steps = int(spec.args[0]) if spec.args else self.default_steps
        if ctx.scale != self.native_scale:
            raise ValueError(f"{spec.family} upscales x{self.native_scale} only; this run is --scale {ctx.scale}")
        if pipeline is None:
            source = spec.path or ctx.sd_upscaler
            if not source:
                raise ValueError(f"{spec.family} needs the upscaler's weights: --sd-upscaler PATH_OR_HUB_ID")
            pipeline = self.load(source, ctx.device)
        self.pipe = pipeline
        self.pipe.set_progress_bar_config(disable=True)

    @classmethod
    def load(cls, source: str, device: str = "cpu"):
        """``from_pretrained`` by local folder or hub id; a clear error when neither works."""
        import diffusers

        klass = getattr(diffusers, cls.pipeline_class_name)
        try:
            pipe = klass.from_pretrained(source)
        except Exception as err:  # noqa: BLE001 - one clear line for any loading failure
            reason = one_line(err)
            raise OSError(
                f"could not load {cls.pipeline_class_name} from {source!r} (a local folder, or a hub id with "
                f"network access or a populated HF cache): {reason}"
            ) from None
        return pipe.to(device)

    def modules(self) -> list[nn.Module]:
        return [m for m in self.pipe.components.values() if isinstance(m, nn.Module)]


class SDUpscale(_DiffusersUpscaler):
    """``StableDiffusionUpscalePipeline`` (stabilityai/stable-diffusion-x4-upscaler)."""

    pipeline_class_name = "StableDiffusionUpscalePipeline"
    native_scale = 4
    default_steps = 20
    GUIDANCE = 9.0  # the pipeline's default

    @torch.no_grad()
    def upscale(self, lr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
        generator = torch.Generator(device="cpu").manual_seed(self.ctx.seed)
        out = self.pipe(
            prompt=self.ctx.sd_prompt,
            image=lr.to(self.ctx.device),  # [0, 1]: the pipeline normalises
            num_inference_steps=self.steps,
            guidance_scale=self.GUIDANCE,
            generator=generator,
            output_type="pt",
        )
        self.nfe = self.steps * (2 if self.GUIDANCE > 1 else 1)  # classifier-free guidance doubles the batch
        return out.images.float().clamp(0, 1)


class SDLatentUpscale(_DiffusersUpscaler):
    """``StableDiffusionLatentUpscalePipeline`` (stabilityai/sd-x2-latent-upscaler)."""

    pipeline_class_name = "StableDiffusionLatentUpscalePipeline"
    native_scale = 2
    default_steps = 20

    @torch.no_grad()
    def upscale(self, lr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
        generator = torch.Generator(device="cpu").manual_seed(self.ctx.seed)
        out = self.pipe(
            prompt=self.ctx.sd_prompt,
            image=lr.to(self.ctx.device),  # [0, 1]: the pipeline normalises
            num_inference_steps=self.steps,
            guidance_scale=0.0,
            generator=generator,
            output_type="pt",
        )
        self.nfe = self.steps
        return out.images.float().clamp(0, 1)


# ---------------------------------------------------------------------------------------------
# Real-ESRGAN (the peer users know), through ncnn on the CPU


class _RealESRGANMethod(Method):
    model_name: str

    def __init__(self, spec: MethodSpec, ctx: MethodContext, model=None):
        _no_args(spec)
        super().__init__(spec, ctx)
        if model is None:
            from eval.realesrgan import RealESRGAN

            model = RealESRGAN(self.model_name)
        self.model = model

    @property
    def parameter_count(self) -> int:
        return self.model.parameter_count

    @torch.no_grad()
    def upscale(self, lr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
        from flowup.resample import downsample

        native, scale = self.model.scale, self.ctx.scale
        out = lr.float().cpu()
        if native >= scale:
            out = self.model.upscale(out)
            if native > scale:
                out = downsample(out, native // scale)
        else:
            for _ in range(round(np.log(scale) / np.log(native))):
                out = self.model.upscale(out)
        self.nfe = 0
        return out.to(self.ctx.device)


class RealESRGANX4Plus(_RealESRGANMethod):
    model_name = "realesrgan-x4plus"


class RealESRGANCompactX2(_RealESRGANMethod):
    model_name = "realesr-animevideov3-x2"


# ---------------------------------------------------------------------------------------------
# Registry

MethodFactory = Callable[[MethodSpec, MethodContext], Method]
_REGISTRY: dict[str, MethodFactory] = {}


def register_method(family: str, factory: MethodFactory) -> None:
    """Add (or replace) a method family; ``factory(spec, ctx)`` builds the method."""
    _REGISTRY[family] = factory


def method_families() -> list[str]:
    return sorted(_REGISTRY)


for _family, _factory in {
    "bicubic": Bicubic,
    "lanczos": Lanczos,
    "latent-bilinear": LatentBilinear,
    "psu": PSU,
    "codec-hr": CodecHR,
    "flowup": FlowUp,
    "sd-upscale": SDUpscale,
    "sd-latent-upscale": SDLatentUpscale,
    "realesrgan-x4plus": RealESRGANX4Plus,
    "realesrgan-compact-x2": RealESRGANCompactX2,
}.items():
    register_method(_family, _factory)


def parse_method(text: str) -> MethodSpec:
    """Parse ``[LABEL=]FAMILY[@PATH][:ARG...]``; raise :class:`UnknownMethodError` if malformed."""
    label, sep, body = text.partition("=")
    if not sep:
        label, body = text, text
    body = body.strip()
    head, _, path_and_args = body.partition("@")
    if path_and_args:
        path, *args = path_and_args.split(":")
        family = head
    else:
        family, *args = body.split(":")
        path = None
    if family not in _REGISTRY:
        raise UnknownMethodError(
            f"unknown method {text!r}; choose from {', '.join(method_families())} "
            "(flowup takes [@PATH][:SOLVER[:STEPS]], e.g. flowup:euler:4)"
        )
    if path is not None and not path:
        raise UnknownMethodError(f"{text!r}: empty path after '@'")
    if not label.strip():
        raise UnknownMethodError(f"{text!r}: empty label before '='")
    spec = MethodSpec(text=body, label=label.strip(), family=family, path=path, args=args)
    if family == "flowup":
        _solver_args(_denoise_arg(_full_codec_arg(_runtime_arg(spec)[0])[0])[0])  # validate early, before any model is loaded
    return spec


def build_method(spec: MethodSpec | str, ctx: MethodContext) -> Method:
    """Instantiate a method (loads its models)."""
    if isinstance(spec, str):
        spec = parse_method(spec)
    return _REGISTRY[spec.family](spec, ctx)
