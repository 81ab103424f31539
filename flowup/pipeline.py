"""``FlowUpPipeline``: low-res images (or latents) in, images ``scale`` times larger out.

One x2 stage (docs/method.md, "Inference"):

1. ``x_up = upsample(x_lr, 2)`` in pixels (bicubic, :mod:`flowup.resample`), reflect-padded at the
   bottom / right so that its latent is a multiple of ``flow.size_multiple``;
2. ``cond = E(x_up)`` (codec encode, tiled when large) and ``x0 = sqrt(a) cond + sqrt(1 - a) eps``
   with ``eps`` drawn for the whole latent from the image's own generator (so tiling never changes
   it, and image ``i`` of a batch equals that image run alone with the same generator);
3. integrate ``dx/dt = v(x, t, cond)`` from t = 0 to 1 (:func:`flowup.solver.sample`), the
   velocity evaluated tile by tile with overlap and blending (:mod:`flowup.tiling`);
4. ``D(x1)`` (codec decode, tiled) cropped back to exactly twice the input size;
5. ``back_projection_steps`` steps of low-res consistency (:mod:`flowup.back_projection`): the
   output's low frequencies are pulled back to the input's, ``downsample(out) ~= x_lr``.

``scale=4`` runs the x2 stage twice, the second on the first stage's output image (``scale=8``:
three times); the later stages run the model's ``cascade_flow`` where it has one (a network
trained on the first stage's outputs), else ``flow`` again. Latent inputs
(``latents=``, of this pipeline's codec) are decoded with the codec and then take the same path;
``latent_upsample="bilinear"`` instead upsamples the latent directly as the first stage's source
(the paper's weaker "LSU" source, for base models that hand over latents of the same codec).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import PIL.Image
import torch
import torch.nn.functional as F
from diffusers import DiffusionPipeline
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor

from flowup.back_projection import back_project
from flowup.codecs import Codec, CodecStages
from flowup.denoise import blend_networks, check_blendable, check_denoise, prefilter
from flowup.flow import noise_source
from flowup.image_io import pil_to_tensor, tensor_to_pil, upsample_alpha
from flowup.model_folder import DEFAULT_NOISE_ALPHA, ModelNotFoundError, check_config, default_model_path, load_model_folder, save_model_folder
from flowup.resample import upsample
from flowup.solver import ADAPTIVE_METHODS, FIXED_STEP_METHODS, nfe_per_step, sample
from flowup.tiling import auto_flow_tile_size, decode_tiled, encode_tiled, tiled_velocity

__all__ = ["FlowUpPipeline", "FlowUpPipelineOutput", "default_model_path", "ModelNotFoundError"]  # the last two
# live in flowup.model_folder (saving and loading) and stay importable from here

OUTPUT_TYPES = ("pil", "pt", "np", "latent")
RUNTIMES = ("auto", "torch", "torch-bf16", "onnx", "onnx-int8")


@dataclass
class FlowUpPipelineOutput(BaseOutput):
    """``images``: list of PIL images, a tensor ``(N, 3, H, W)`` in [0, 1] (``pt``), an array
    ``(N, H, W, 3)`` (``np``) or latents ``(N, C, H/8, W/8)`` (``latent``); a list of tensors /
    arrays when the inputs differ in size. ``nfe``: model evaluations per sample, all stages."""

    images: list[PIL.Image.Image] | np.ndarray | torch.Tensor | list
    nfe: int


@dataclass
class Networks:
    """What one x2 stage runs: the velocity ``(x_t, t, cond) -> v`` and the codec's stages
    (None: tile the whole codec), as torch modules or ONNX Runtime sessions, and ``flow``, the
    torch velocity network behind them, whose geometry (size multiple, receptive radius) and
    dtype the stage pads, tiles and casts by."""

    velocity: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
    encoder: CodecStages | None
    decoder: CodecStages | None
    flow: torch.nn.Module


@dataclass
class _Item:
    """One input image: ``rgb`` ``(3, H, W)`` float in [0, 1], optional ``alpha`` ``(1, H, W)``."""

    rgb: torch.Tensor
    alpha: torch.Tensor | None = None
    mode: str = "RGB"
    latent: torch.Tensor | None = None  # ``(C, h, w)`` when the input was a latent (bilinear source)


class _WorkProgress:
    """The fraction of one ``__call__``'s work done, for ``progress_callback``.

    Parts are weighted by their cost per output pixel, counted with ``torch.utils.flop_counter``
    for TAEF2 and the shipped flow (GFLOP per output megapixel: encode 470, decode 543, flow 69 per
    evaluation, back-projection about 25), so a single large image moves smoothly: tile by tile
    through the codec and the flow, stage by stage.
    """

    ENCODE, DECODE, FLOW_PER_NFE, BACK_PROJECTION = 470.0, 543.0, 69.0, 25.0

    def __init__(self, callback: Callable[[float], None] | None, total: float):
        self.callback, self.total, self.done = callback, max(total, 1e-12), 0.0

    def part(self, weight: float) -> Callable[[float], None] | None:
        """A callback for one part (``fraction`` of it done); the next ``part`` starts after it."""
        if self.callback is None:
            return None
        start = self.done
        self.done += weight

        def report(fraction: float) -> None:
            self.callback(min(1.0, (start + min(max(fraction, 0.0), 1.0) * weight) / self.total))

        return report

    @classmethod
    def stage_weight(cls, out_pixels: float, nfe: int, back_projection_steps: int) -> float:
        return out_pixels * (cls.ENCODE + cls.DECODE + cls.FLOW_PER_NFE * nfe + (cls.BACK_PROJECTION if back_projection_steps else 0.0))


class FlowUpPipeline(DiffusionPipeline):
    r"""Flow-matching latent upscaler (Coupling Flow Matching, arXiv 2312.07360).

    Components: ``flow`` (:class:`~flowup.FlowUNet`, the velocity model ``v(x_t, t, cond)``),
    ``codec`` (a :class:`~flowup.codecs.Codec`, TAEF2 by default) and optionally ``cascade_flow``
    (the velocity model of the second and later x2 stages of ``scale`` 4 / 8, trained on the
    first stage's outputs: ``python -m train prepare --source-model``). Config: ``noise_alpha`` (the
    source's noise augmentation ``a``), ``scale_factor`` (2: one stage), the default number of
    steps, solver and back-projection steps, and ``codec_spec`` (how to rebuild a codec that is
    not saved in the folder, e.g. ``"taef2"``).

    Runtime (:meth:`set_runtime`): ``"torch"`` (the default of a pipeline built directly),
    ``"torch-bf16"`` (oneDNN bfloat16 on a CPU, :mod:`flowup.bf16_runtime`: about 4x faster where
    the CPU has AMX), ``"onnx"`` (ONNX Runtime, :mod:`flowup.onnx_runtime`: CPU, float32, about
    2-3x faster), ``"onnx-int8"`` (the same with the codec's convolutions in 8-bit integers,
    :mod:`flowup.onnx_int8`: opt-in, about 1.7x faster again on a CPU without AMX, at 0.1-0.2 dB
    PSNR-Y) or ``"auto"`` (the default of :meth:`from_pretrained`: on a CPU in float32,
    torch-bf16 where the CPU has AMX, else ONNX Runtime float32; torch elsewhere).

    Example::

        pipe = FlowUpPipeline.from_pretrained("path/to/model", torch_dtype=torch.float16).to("cuda")
        out = pipe(image=PIL.Image.open("in.png"), scale=2, generator=torch.Generator().manual_seed(0))
        out.images[0].save("out.png")
    """

    _optional_components = ["codec", "cascade_flow", "faithful_flow"]

    def enable_model_cpu_offload(self, *args: Any, **kwargs: Any) -> None:
        """Not supported: the codec runs through ``encode`` / ``decode`` (and engines), which
        accelerate's offload hooks never see, and the networks are small (about 25 MB at float16):
        move the pipeline with ``.to(device)``. To save GPU memory in a text-to-image chain,
        offload the *base* model (``BoostedTextToImage(offload=True)``, ``flowup generate --offload``)."""
        raise NotImplementedError(
            "FlowUpPipeline does not support CPU offload (its networks are ~25 MB; use .to(device)); "
            "offload the base model instead: BoostedTextToImage(..., offload=True)"
        )

    enable_sequential_cpu_offload = enable_model_cpu_offload

    def __init__(
        self,
        flow: torch.nn.Module,
        codec: Codec,
        noise_alpha: float = DEFAULT_NOISE_ALPHA,
        scale_factor: int = 2,
        default_num_inference_steps: int = 40,
        default_solver: str = "euler",
        codec_spec: str | None = None,
        default_back_projection_steps: int = 0,
        default_cascade_detail: float = 1.0,
        cascade_flow: torch.nn.Module | None = None,
        faithful_flow: torch.nn.Module | None = None,
        default_denoise: float = 0.0,
    ):
        super().__init__()
        check_config(noise_alpha=noise_alpha, scale_factor=scale_factor, default_solver=default_solver,
                     default_num_inference_steps=default_num_inference_steps,
                     default_back_projection_steps=default_back_projection_steps,
                     default_cascade_detail=default_cascade_detail, default_denoise=default_denoise)  # fmt: skip
        skip_alpha = getattr(getattr(flow, "config", None), "skip_noise_alpha", None)
        if skip_alpha is not None and abs(float(skip_alpha) - float(noise_alpha)) > 1e-6:
            raise ValueError(f"noise_alpha {noise_alpha} differs from the one the flow's Gaussian skip assumes ({skip_alpha})")
        if cascade_flow is not None:
            cascade_alpha = getattr(getattr(cascade_flow, "config", None), "skip_noise_alpha", None)
            if cascade_alpha is not None and abs(float(cascade_alpha) - float(noise_alpha)) > 1e-6:
                raise ValueError(f"noise_alpha {noise_alpha} differs from the one the cascade flow's Gaussian skip assumes ({cascade_alpha})")
        if faithful_flow is not None:
            check_blendable(faithful_flow, flow)
        self.register_modules(flow=flow, codec=codec, cascade_flow=cascade_flow, faithful_flow=faithful_flow)
        self._runtime = "torch"
        # (runtime, flow name, denoise) -> (state key, engine) once built
        self._engines: dict[tuple[str, str, float | None], tuple] = {}
        self._blends: dict[float, torch.nn.Module] = {}  # denoise -> the blended flow (flowup.denoise)
        self.register_to_config(
            noise_alpha=float(noise_alpha),
            scale_factor=int(scale_factor),
            default_num_inference_steps=int(default_num_inference_steps),
            default_solver=default_solver,
            codec_spec=codec_spec,
            default_back_projection_steps=default_back_projection_steps,
            default_cascade_detail=float(default_cascade_detail),
            default_denoise=float(default_denoise),
        )

    def stage_count(self, scale: int) -> int:
        """How many stages of this model's factor ``scale`` takes (x2 model: 2 -> 1, 4 -> 2, 8 -> 3);
        raises ``ValueError`` for a scale it cannot make."""
        return _num_stages(scale, int(self.config.scale_factor))

    # ----------------------------------------------------------------------------------------
    # runtime

    @property
    def runtime(self) -> str:
        """The runtime asked for: ``"auto"`` or one of :data:`RUNTIMES` (see :meth:`set_runtime`)."""
        return self._runtime

    def set_runtime(self, runtime: str) -> "FlowUpPipeline":
        """Run the networks with ``"torch"``, ``"torch-bf16"``, ``"onnx"``, ``"onnx-int8"`` (each of
        the last three raises at call time where it cannot apply: not on a CPU, not float32 weights,
        its library or instructions missing) or ``"auto"`` (the fastest of them that applies here, see the class
        docstring). Returns the pipeline."""
        if runtime not in RUNTIMES:
            raise ValueError(f"runtime must be one of {RUNTIMES}, got {runtime!r}")
        self._runtime = runtime
        return self

    def _unavailable_reason(self, runtime: str) -> str | None:
        if runtime == "torch-bf16":
            from flowup.bf16_runtime import bf16_unavailable_reason

            return bf16_unavailable_reason(self.flow, self.codec, self._execution_device)
        from flowup.onnx_runtime import onnx_unavailable_reason

        reason = onnx_unavailable_reason(self.flow, self.codec, self._execution_device)
        if reason is None and runtime == "onnx-int8":
            from flowup.onnx_int8 import int8_unavailable_reason

            reason = int8_unavailable_reason()
        return reason

    def active_runtime(self) -> str:
        """The runtime a call would use now: ``"torch"``, ``"torch-bf16"``, ``"onnx"`` or ``"onnx-int8"``
        (``"auto"`` never picks the last: it changes the output beyond float rounding)."""
        if self._runtime == "torch":
            return "torch"
        if self._runtime != "auto":
            reason = self._unavailable_reason(self._runtime)
            if reason is not None:
                raise ValueError(f"runtime {self._runtime!r} cannot run this pipeline: {reason}")
            return self._runtime
        from flowup.bf16_runtime import cpu_has_amx

        if cpu_has_amx() and self._unavailable_reason("torch-bf16") is None:
            return "torch-bf16"
        return "onnx" if self._unavailable_reason("onnx") is None else "torch"

    def resolve_denoise(self, denoise: float | None) -> float:
        """The denoise setting a call with ``denoise`` runs: the number, checked, or the config's
        ``default_denoise`` (0 for a model saved without one)."""
        return check_denoise(self.config.get("default_denoise", 0.0) if denoise is None else denoise)

    def flow_at(self, denoise: float | None) -> torch.nn.Module:
        """The first stage's velocity network at ``denoise``: :func:`flowup.denoise.blend_networks`
        of ``faithful_flow`` and ``flow`` where the model has both, else ``flow``."""
        if denoise is None or self.faithful_flow is None:
            return self.flow
        if denoise not in self._blends:
            self._blends = {denoise: blend_networks(self.faithful_flow, self.flow, denoise)}  # keep one blend
        return self._blends[denoise]

    def networks(self, stage: int = 0, denoise: float | None = None) -> Networks:
        """The velocity and codec stages that x2 stage ``stage`` (0 = the first) of a call runs
        now (torch modules, their bfloat16 copies or ONNX Runtime sessions): later stages run
        ``cascade_flow`` where the model has one, else ``flow`` (at ``denoise``, as
        :meth:`resolve_denoise` returns it)."""
        name = "cascade_flow" if stage > 0 and self.cascade_flow is not None else "flow"
        flow = self.cascade_flow if name == "cascade_flow" else self.flow_at(denoise)
        if name == "cascade_flow" or self.faithful_flow is None:
            denoise = None  # one network whatever the setting: one engine
        runtime = self.active_runtime()
        if runtime == "torch":
            return Networks(flow, self.codec.encoder_stages(), self.codec.decoder_stages(), flow)
        # Rebuilt when weights change in place (training), move, or torch's thread count changes.
        # Inference tensors (weights loaded under torch.inference_mode) carry no version counter.
        key = (torch.get_num_threads(),) + tuple(
            (p.data_ptr(), 0 if p.is_inference() else p._version) for m in (flow, self.codec) for p in m.parameters()
        )
        slot = (runtime, name, denoise)
        if slot not in self._engines or self._engines[slot][0] != key:
            if runtime in ("onnx", "onnx-int8"):
                from flowup.onnx_runtime import load_engine

                engine = load_engine(flow, self.codec, int8=runtime == "onnx-int8")
            else:
                from flowup.bf16_runtime import Bf16Engine

                engine = Bf16Engine(flow, self.codec)
            self._engines[slot] = (key, engine)
        engine = self._engines[slot][1]
        return Networks(engine.velocity, engine.encoder_stages, engine.decoder_stages, flow)

    # ----------------------------------------------------------------------------------------
    # inference

    @torch.no_grad()
    def __call__(
        self,
        image: PIL.Image.Image | list[PIL.Image.Image] | torch.Tensor | list[torch.Tensor] | None = None,
        latents: torch.Tensor | None = None,
        scale: int = 2,
        num_inference_steps: int | None = None,
        solver: str | None = None,
        generator: torch.Generator | list[torch.Generator] | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        tile_size: int | None = None,
        tile_overlap: int | None = None,
        codec_tile_size: int | None = None,
        latent_upsample: str = "pixel",
        back_projection_steps: int | None = None,
        progress_callback: Callable[[float], None] | None = None,
        detail: float | None = None,
        input_back_projection_steps: int = 0,
        denoise: float | None = None,
    ) -> FlowUpPipelineOutput | tuple:
        r"""Upscale ``image`` (or ``latents``) by ``scale``.

        Args:
            image: a PIL image (any mode: alpha is upscaled separately by bicubic and re-attached,
                greyscale comes back greyscale), a list of them, or float tensors ``(N, 3, h, w)``
                / ``(3, h, w)`` in [0, 1] (1-channel tensors are treated as greyscale).
            latents: instead of ``image``, low-res latents ``(N, C, h, w)`` of this codec.
            scale: 2, 4 or 8 (the x2 stage once, twice or three times; stages after the first
                run ``cascade_flow`` where the model has one).
            num_inference_steps: ODE steps per stage (fixed-step solvers); default from the config.
                ``0``: no flow, the codec round trip of the upsampled input (the PSU baseline).
            solver: ``euler``, ``midpoint``, ``rk4`` or ``dopri5``; default from the config.
            generator: one ``torch.Generator``, or a list with one per image. Same seed, same output.
            output_type: ``pil``, ``pt`` (float ``(N, 3, H, W)`` in [0, 1]), ``np`` (``(N, H, W, 3)``)
                or ``latent`` (the last stage's latents before back-projection, ``(N, C, ceil(H/8), ceil(W/8))``).
            return_dict: return a :class:`FlowUpPipelineOutput` (else a tuple ``(images, nfe)``).
            tile_size: latent tile side for the velocity model: ``None`` = automatic (memory
                budget), ``0`` = no tiling.
            tile_overlap: latent overlap of velocity tiles; default: exact (twice the model's
                receptive radius plus a blending ramp) where affordable, else half a tile.
            codec_tile_size: latent tile side for the codec (``None`` default, ``0`` untiled).
            latent_upsample: for ``latents``: ``"pixel"`` decodes them and upsamples in pixels
                (default, better); ``"bilinear"`` upsamples the latents directly in the first stage.
            back_projection_steps: low-res consistency steps after each x2 stage
                (:func:`flowup.back_projection.back_project`); ``0`` = off; default from the config.
            detail: how much of the detail the flow adds to its source to keep, per stage:
                ``latent = cond + detail * (x1 - cond)``; ``1`` = the flow's output, ``0`` = the
                clean source (the PSU round trip, no added texture), in between = less texture and
                less grain, up to ``2`` = more. One number for every stage, or a sequence with one
                per stage (``(1.0, 0.5)`` at x4). Default (``None``): 1 at x2; at x4 the config's
                ``default_cascade_detail`` (0.5 for the shipped model: a second stage amplifies the
                first one's texture, docs/upscale.md).
            input_back_projection_steps: for ``scale`` 4 or 8: back-projection steps of the final
                output onto the call's own input, through the whole x4 downsampling, after each
                stage's own (which only pins a stage to the previous stage's output); ``0`` = off.
            denoise: how much of the input's grain and compression artefacts to remove before
                upscaling, 0 to 1 (:mod:`flowup.denoise`: an edge-preserving filter of the input,
                which back-projection then also pins to; with a ``faithful_flow``, the two
                networks' blend): 0 keeps everything the input holds, 1 cleans most. Default: the
                config's ``default_denoise``.
            progress_callback: called as ``progress_callback(fraction)`` with the fraction of the
                call's work done (0 to 1), tile by tile and stage by stage, weighted by cost: one
                progress display covers one large image as well as a batch.

        Returns:
            :class:`FlowUpPipelineOutput` with ``images`` exactly ``scale`` times the input size and
            ``nfe``, the model evaluations per sample summed over stages.
        """
        stages = self.stage_count(scale)
        factor = int(self.config.scale_factor)
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"output_type must be one of {OUTPUT_TYPES}, got {output_type!r}")
        if latent_upsample not in ("pixel", "bilinear"):
            raise ValueError(f"latent_upsample must be 'pixel' or 'bilinear', got {latent_upsample!r}")
        steps = self.config.default_num_inference_steps if num_inference_steps is None else num_inference_steps
        solver = solver or self.config.default_solver
        if solver not in FIXED_STEP_METHODS + ADAPTIVE_METHODS:
            raise ValueError(f"unknown solver {solver!r}; choose one of {FIXED_STEP_METHODS + ADAPTIVE_METHODS}")
        if not isinstance(steps, int) or isinstance(steps, bool) or steps < 0:
            raise ValueError(f"num_inference_steps must be an integer >= 0, got {steps!r}")
        if back_projection_steps is None:
            back_projection_steps = self.config.get("default_back_projection_steps", 0)
        if not isinstance(back_projection_steps, int) or back_projection_steps < 0:
            raise ValueError(f"back_projection_steps must be an integer >= 0, got {back_projection_steps!r}")
        if not isinstance(input_back_projection_steps, int) or input_back_projection_steps < 0:
            raise ValueError(f"input_back_projection_steps must be an integer >= 0, got {input_back_projection_steps!r}")

        denoise = self.resolve_denoise(denoise)
        networks = self.networks(0, denoise)
        items = self._prepare_inputs(image, latents, latent_upsample, codec_tile_size, networks)
        generators = _per_image_generators(generator, len(items))
        if detail is None:  # x2: the flow's output; x4 (two stages): the model's measured cascade setting
            detail = 1.0 if stages == 1 else self.config.get("default_cascade_detail", 1.0)
        stage_details = _stage_details(detail, stages)
        options = dict(steps=steps, solver=solver, tile_size=tile_size, tile_overlap=tile_overlap,
                       codec_tile_size=codec_tile_size, back_projection_steps=back_projection_steps,
                       networks=networks)  # fmt: skip

        # Same-size inputs run as one batch; mixed sizes run one by one (noise is per image either way).
        same_size = len({tuple(i.rgb.shape) for i in items}) == 1
        groups = [list(range(len(items)))] if same_size else [[i] for i in range(len(items))]
        nfe_guess = 0 if steps == 0 else (steps * nfe_per_step(solver) if solver in FIXED_STEP_METHODS else 36)
        total_work = sum(
            _WorkProgress.stage_weight(items[i].rgb[0].numel() * factor ** (2 * stage + 2), nfe_guess, back_projection_steps)
            for group in groups for i in group for stage in range(stages)
        )  # fmt: skip
        progress = _WorkProgress(progress_callback, total_work)
        results: list[tuple[torch.Tensor, torch.Tensor]] = [None] * len(items)  # type: ignore[list-item]
        nfe_total = 0
        for group in groups:
            rgb = lr = prefilter(torch.stack([items[i].rgb for i in group]), denoise)
            source_latent = None
            if items[group[0]].latent is not None:
                source_latent = torch.stack([items[i].latent for i in group])
            gens = [generators[i] for i in group]
            group_nfe, latent = 0, None
            for stage in range(stages):
                pixels = sum(items[i].rgb[0].numel() for i in group) * factor ** (2 * stage + 2)
                stage_options = {**options, "networks": networks if stage == 0 else self.networks(stage, denoise),
                                 "detail": stage_details[stage]}  # fmt: skip
                rgb, latent, nfe = self._upscale_stage(rgb, gens, source_latent if stage == 0 else None, **stage_options,
                                                    progress=progress, out_pixels=pixels, nfe_guess=nfe_guess)  # fmt: skip
                group_nfe += nfe
            if stages > 1 and input_back_projection_steps:  # pin the final output to the call's input
                rgb = back_project(rgb, lr.to(rgb), input_back_projection_steps)
            nfe_total = max(nfe_total, group_nfe)  # adaptive solvers: the most any image needed
            for k, i in enumerate(group):
                results[i] = (rgb[k], latent[k])

        images = self._to_output([r[0] for r in results], [r[1] for r in results], items, scale, output_type)
        self.maybe_free_model_hooks()
        if not return_dict:
            return images, nfe_total
        return FlowUpPipelineOutput(images=images, nfe=nfe_total)

    def _upscale_stage(
        self,
        rgb: torch.Tensor,
        generators: list[torch.Generator | None],
        source_latent: torch.Tensor | None,
        steps: int,
        solver: str,
        tile_size: int | None,
        tile_overlap: int | None,
        codec_tile_size: int | None,
        back_projection_steps: int,
        networks: Networks,
        progress: _WorkProgress | None = None,
        out_pixels: float = 0.0,
        nfe_guess: int = 1,
        detail: float = 1.0,
    ) -> tuple[torch.Tensor, torch.Tensor, int]:
        """One stage of the model's factor ``f`` (2 or 4): ``(N, 3, h, w)`` float32 -> ``(N, 3, f h, f w)``
        float32, the latent, NFE.
        ``progress``: the call's :class:`_WorkProgress`, this stage being ``out_pixels`` of it."""
        progress = progress or _WorkProgress(None, 1.0)
        device, flow, codec = self._execution_device, networks.flow, self.codec
        factor = int(self.config.scale_factor)
        out_h, out_w = factor * rgb.shape[-2], factor * rgb.shape[-1]
        multiple = codec.downscale * flow.size_multiple
        if source_latent is None:
            x_up = _pad_to_multiple(upsample(rgb.to(device, torch.float32), factor), multiple)
            cond = encode_tiled(codec, x_up.to(codec.dtype), codec_tile_size, networks.encoder,
                                on_progress=progress.part(out_pixels * _WorkProgress.ENCODE))  # fmt: skip
            del x_up
        else:  # latent-space bilinear source (first stage only)
            progress.part(out_pixels * _WorkProgress.ENCODE)
            cond = F.interpolate(source_latent.to(device, torch.float32), scale_factor=factor, mode="bilinear")
            cond = _pad_to_multiple(cond, flow.size_multiple)
        cond = cond.to(flow.dtype)
        if steps == 0:  # no flow: decode the source itself (the PSU baseline, through the same path)
            latent, nfe = cond.float(), 0
        else:
            latent, nfe = self._integrate(cond, generators, steps, solver, tile_size, tile_overlap, networks,
                                          progress, out_pixels, nfe_guess)  # fmt: skip
            if detail != 1.0:  # keep a fraction of what the flow added to its clean source
                latent = torch.lerp(cond.float(), latent, detail)
        del cond
        decoded = decode_tiled(codec, latent.to(codec.dtype), codec_tile_size, networks.decoder,
                               on_progress=progress.part(out_pixels * _WorkProgress.DECODE))  # fmt: skip
        images = decoded[..., :out_h, :out_w].float()
        del decoded
        finished = progress.part(out_pixels * _WorkProgress.BACK_PROJECTION if back_projection_steps else 0.0)
        images = back_project(images, rgb.to(images), back_projection_steps)
        if finished is not None:
            finished(1.0)
        latent = latent[..., : math.ceil(out_h / codec.downscale), : math.ceil(out_w / codec.downscale)]
        return images, latent, nfe

    def _integrate(
        self,
        cond: torch.Tensor,
        generators: list[torch.Generator | None],
        steps: int,
        solver: str,
        tile_size: int | None,
        tile_overlap: int | None,
        networks: Networks,
        progress: _WorkProgress,
        out_pixels: float,
        nfe_guess: int,
    ) -> tuple[torch.Tensor, int]:
        """Noise the source latent ``cond`` ``(N, C, h, w)`` and integrate the flow: ``(x1, NFE)``."""
        device, flow = self._execution_device, networks.flow
        noise = torch.cat(
            [randn_tensor((1, *cond.shape[1:]), generator=g, device=device, dtype=torch.float32) for g in generators]
        )
        x0 = noise_source(cond.float(), self.config.noise_alpha, noise=noise)
        del noise
        tile = auto_flow_tile_size(flow, cond.shape[0], flow.dtype) if tile_size is None else tile_size

        evaluation = [progress.part(out_pixels * _WorkProgress.FLOW_PER_NFE) for _ in range(nfe_guess)]

        def velocity(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            report = evaluation.pop(0) if len(evaluation) > 1 else (evaluation[0] if evaluation else None)
            v = tiled_velocity(flow, x.to(flow.dtype), t.to(flow.dtype), cond, tile, tile_overlap, networks.velocity,
                               on_progress=report)  # fmt: skip
            return v.float()

        total = steps * nfe_per_step(solver) if solver in FIXED_STEP_METHODS else None
        with self.progress_bar(total=total) as bar:
            result = sample(velocity, x0, num_steps=steps, method=solver, on_evaluation=lambda n, t: bar.update())
        return result.x1, result.nfe

    # ----------------------------------------------------------------------------------------
    # input / output

    def _prepare_inputs(
        self,
        image: Any,
        latents: torch.Tensor | None,
        latent_upsample: str,
        codec_tile_size: int | None,
        networks: Networks,
    ) -> list[_Item]:
        if (image is None) == (latents is None):
            raise ValueError("pass exactly one of image= or latents=")
        if latents is not None:
            channels = self.codec.latent_channels
            if not isinstance(latents, torch.Tensor) or latents.ndim != 4 or latents.shape[1] != channels:
                shape = tuple(latents.shape) if isinstance(latents, torch.Tensor) else type(latents).__name__
                raise ValueError(f"latents must be a tensor (N, {channels}, h, w) of this codec, got {shape}")
            device = self._execution_device
            z = latents.to(device, self.codec.dtype)
            rgb = decode_tiled(self.codec, z, codec_tile_size, networks.decoder).float()
            keep = latent_upsample == "bilinear"
            return [_Item(rgb=rgb[i], latent=latents[i].float() if keep else None) for i in range(len(rgb))]
        if isinstance(image, torch.Tensor):
            image = list(image) if image.ndim == 4 else [image]
        elif isinstance(image, PIL.Image.Image):
            image = [image]
        if not isinstance(image, (list, tuple)) or not image:
            raise ValueError("image must be a PIL image, a list of them, or a float tensor (N, 3, h, w) in [0, 1]")
        items = []
        for k, img in enumerate(image):
            if isinstance(img, PIL.Image.Image):
                loaded = pil_to_tensor(img)
                items.append(_Item(loaded.rgb, loaded.alpha, loaded.mode))
            elif isinstance(img, torch.Tensor):
                items.append(_Item(_check_tensor_image(img, k)))
            else:
                raise ValueError(f"image {k}: expected a PIL image or a tensor, got {type(img).__name__}")
        return items

    def _to_output(
        self,
        rgbs: list[torch.Tensor],
        latents: list[torch.Tensor],
        items: list[_Item],
        scale: int,
        output_type: str,
    ) -> Any:
        same_size = len({tuple(r.shape) for r in rgbs}) == 1
        if output_type == "latent":
            return torch.stack(latents) if same_size else latents
        if output_type == "pil":
            return [
                tensor_to_pil(rgb, upsample_alpha(item.alpha, scale) if item.alpha is not None else None, item.mode)
                for rgb, item in zip(rgbs, items)
            ]
        if output_type == "pt":
            return torch.stack(rgbs) if same_size else rgbs
        arrays = [r.permute(1, 2, 0).cpu().numpy() for r in rgbs]
        return np.stack(arrays) if same_size else arrays

    # ----------------------------------------------------------------------------------------
    # saving and loading (flowup.model_folder)

    def save_pretrained(
        self,
        save_directory: str | Path,
        save_codec: bool | None = None,
        torch_dtype: torch.dtype | None = None,
        **kwargs: Any,
    ) -> None:
        """Save to a folder: ``model_index.json`` + ``flow/`` (+ ``codec/``), safetensors weights.

        ``save_codec=None`` (default): the codec is left out when it is the standard TAEF2 (same
        weights as :func:`flowup.load_codec` ``("taef2")`` loads), and recorded as
        ``codec_spec="taef2"`` so that :meth:`from_pretrained` rebuilds it. ``save_codec=False``
        requires a ``codec_spec`` in the config. ``torch_dtype`` (e.g. ``torch.float16``) saves
        the weights in that dtype without changing this pipeline.
        """
        save_model_folder(self, save_directory, save_codec=save_codec, torch_dtype=torch_dtype, **kwargs)

    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: str | Path,
        codec: Codec | None = None,
        torch_dtype: torch.dtype | None = None,
        runtime: str = "auto",
        **kwargs: Any,
    ) -> "FlowUpPipeline":
        """Load a folder written by :meth:`save_pretrained` (or a hub id, downloaded by diffusers).

        ``codec``: use this codec instead of the saved one / the one ``codec_spec`` names.
        ``torch_dtype``: cast the weights (default: float32). ``runtime``: see :meth:`set_runtime`
        (default ``"auto"``: on a CPU in float32 the fastest engine that applies, torch elsewhere).
        The config in ``model_index.json`` is checked before any weights are read.
        """
        if runtime not in RUNTIMES:
            raise ValueError(f"runtime must be one of {RUNTIMES}, got {runtime!r}")
        folder, params, flow, codec, optional = load_model_folder(pretrained_model_name_or_path, codec, torch_dtype,
                                                                  **kwargs)  # fmt: skip
        pipe = cls(flow=flow, codec=codec, **optional, **params)
        pipe.register_to_config(_name_or_path=str(pretrained_model_name_or_path))
        return pipe.set_runtime(runtime)


# --------------------------------------------------------------------------------------------
# helpers


def _num_stages(scale: int, factor: int) -> int:
    stages = round(math.log(scale, factor)) if isinstance(scale, int) and scale > 1 else 0
    if stages < 1 or factor**stages != scale or scale > 8:
        allowed = ", ".join(str(factor**k) for k in range(1, 4) if factor**k <= 8)
        raise ValueError(f"scale must be one of {allowed} for this x{factor} model, got {scale!r}")
    return stages


def _stage_details(detail: Any, stages: int) -> list[float]:
    """``detail`` (one number for every stage, or a sequence with one per stage) -> one float per stage."""
    values = list(detail) if isinstance(detail, (list, tuple)) else [detail]
    for value in values:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 2:
            raise ValueError(f"detail must be a number in [0, 2] or one per stage, got {detail!r}")
    if len(values) == 1:
        return [float(values[0])] * stages
    if len(values) != stages:
        raise ValueError(f"detail has {len(values)} values but this scale runs {stages} stage{'s' if stages > 1 else ''}")
    return [float(v) for v in values]


def _per_image_generators(generator: Any, count: int) -> list[torch.Generator | None]:
    """One generator per image; a single generator is shared (drawn from in image order)."""
    if isinstance(generator, (list, tuple)):
        if len(generator) != count:
            raise ValueError(f"got {len(generator)} generators for {count} images")
        return list(generator)
    return [generator] * count


def _check_tensor_image(image: torch.Tensor, index: int) -> torch.Tensor:
    """``(C, h, w)`` float in [0, 1] with C in (1, 3) -> ``(3, h, w)`` float32."""
    if image.ndim != 3 or image.shape[0] not in (1, 3):
        raise ValueError(f"image {index}: expected a tensor (3, h, w) or (N, 3, h, w), got shape {tuple(image.shape)}")
    if not image.is_floating_point():
        raise ValueError(f"image {index}: expected a float tensor in [0, 1], got {image.dtype}")
    low, high = float(image.min()), float(image.max())
    if low < -1e-3 or high > 1 + 1e-3:
        raise ValueError(f"image {index}: values must be in [0, 1], got [{low:.3g}, {high:.3g}]")
    return image.float().clamp(0, 1).expand(3, -1, -1)


def _pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Reflect-pad ``(N, C, H, W)`` at the bottom / right to multiples of ``multiple`` (repeats the
    reflection for inputs smaller than the padding; a 1-pixel side is replicated)."""
    pad_h, pad_w = -x.shape[-2] % multiple, -x.shape[-1] % multiple
    while pad_h or pad_w:
        step_h = min(pad_h, x.shape[-2] - 1) if x.shape[-2] > 1 else 0
        step_w = min(pad_w, x.shape[-1] - 1) if x.shape[-1] > 1 else 0
        if step_h == 0 and step_w == 0:
            return F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
        x = F.pad(x, (0, step_w, 0, step_h), mode="reflect")
        pad_h, pad_w = pad_h - step_h, pad_w - step_w
    return x
