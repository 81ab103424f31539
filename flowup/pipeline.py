"""``FlowUpPipeline``: low-res images (or latents) in, images ``scale`` times larger out.

Each x2 stage is :class:`flowup.stage.X2Stage` (upsample, encode, integrate the flow, decode,
back-project; docs/method.md, "Inference"). ``scale=4`` runs the stage twice, the second on the
first stage's output image (``scale=8``: three times); the later stages run the model's
``cascade_flow`` where it has one (a network trained on the first stage's outputs), else ``flow``
again. Latent inputs (``latents=``, of this pipeline's codec) are decoded with the codec and then
take the same path; ``latent_upsample="bilinear"`` instead upsamples the latent directly as the
first stage's source (the paper's weaker "LSU" source). Which engine runs the networks is the
runtime's business (:mod:`flowup.runtimes`).
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import PIL.Image
import torch
from diffusers import DiffusionPipeline
from diffusers.utils import BaseOutput

from flowup.back_projection import back_project
from flowup.codecs import Codec
from flowup.denoise import blend_networks, check_blendable, check_denoise, prefilter
from flowup.model_folder import (
    DEFAULT_CONFIG,
    ModelNotFoundError,
    check_config,
    default_model_path,
    load_model_folder,
    save_model_folder,
)
from flowup.pipeline_io import (
    OUTPUT_TYPES,
    InputImage,
    check_detail,
    images_from,
    latents_from,
    per_image_generators,
    to_output,
)
from flowup.progress import WorkProgress
from flowup.runtimes import AUTO, Engine, EngineCache, check_runtime_name, choose_runtime
from flowup.solver import ADAPTIVE_METHODS, FIXED_STEP_METHODS
from flowup.stage import StageSettings, X2Stage

__all__ = ["FlowUpPipeline", "FlowUpPipelineOutput", "default_model_path", "ModelNotFoundError"]  # the last two
# live in flowup.model_folder (saving and loading) and stay importable from here


@dataclass
class FlowUpPipelineOutput(BaseOutput):
    """``images``: list of PIL images, a tensor ``(N, 3, H, W)`` in [0, 1] (``pt``), an array
    ``(N, H, W, 3)`` (``np``) or latents ``(N, C, H/8, W/8)`` (``latent``); a list of tensors /
    arrays when the inputs differ in size. ``nfe``: model evaluations per sample, all stages."""

    images: list[PIL.Image.Image] | np.ndarray | torch.Tensor | list
    nfe: int


class FlowUpPipeline(DiffusionPipeline):
    r"""Flow-matching latent upscaler (Coupling Flow Matching, arXiv 2312.07360).

    Components: ``flow`` (:class:`~flowup.FlowUNet`, the velocity model ``v(x_t, t, cond)``),
    ``codec`` (a :class:`~flowup.codecs.Codec`, TAEF2 by default), optionally ``cascade_flow``
    (the velocity model of the second and later x2 stages of ``scale`` 4 / 8, trained on the
    first stage's outputs: ``python -m train prepare --source-model``) and ``faithful_flow`` (the
    denoise control's faithful end, :mod:`flowup.denoise`). Config (defaults:
    :data:`flowup.model_folder.DEFAULT_CONFIG`): ``noise_alpha`` (the source's noise augmentation
    ``a``), ``scale_factor`` (2: one stage), the default steps, solver, back-projection steps,
    cascade detail and denoise, and ``codec_spec`` (how to rebuild a codec that is not saved in
    the folder, e.g. ``"taef2"``). Runtime: :meth:`set_runtime` (:mod:`flowup.runtimes`).

    Example::

        pipe = FlowUpPipeline.from_pretrained("path/to/model", torch_dtype=torch.float16).to("cuda")
        out = pipe(image=PIL.Image.open("in.png"), scale=2, generator=torch.Generator().manual_seed(0))
        out.images[0].save("out.png")
    """

    _optional_components = ["codec", "cascade_flow", "faithful_flow"]

    def enable_model_cpu_offload(self, *args: Any, **kwargs: Any) -> None:
        """Not supported: the codec runs through ``encode`` / ``decode`` (and engines), which
        accelerate's offload hooks never see, and the networks are small: move the pipeline with
        ``.to(device)``. To save GPU memory in a text-to-image chain, offload the *base* model
        (``BoostedTextToImage(offload=True)``, ``flowup generate --offload``)."""
        raise NotImplementedError(
            "FlowUpPipeline does not support CPU offload (its networks are small; use .to(device)); "
            "offload the base model instead: BoostedTextToImage(..., offload=True)"
        )

    enable_sequential_cpu_offload = enable_model_cpu_offload

    def __init__(
        self,
        flow: torch.nn.Module,
        codec: Codec,
        noise_alpha: float = DEFAULT_CONFIG["noise_alpha"],
        scale_factor: int = DEFAULT_CONFIG["scale_factor"],
        default_num_inference_steps: int = DEFAULT_CONFIG["default_num_inference_steps"],
        default_solver: str = DEFAULT_CONFIG["default_solver"],
        codec_spec: str | None = DEFAULT_CONFIG["codec_spec"],
        default_back_projection_steps: int = DEFAULT_CONFIG["default_back_projection_steps"],
        default_cascade_detail: float = DEFAULT_CONFIG["default_cascade_detail"],
        cascade_flow: torch.nn.Module | None = None,
        faithful_flow: torch.nn.Module | None = None,
        default_denoise: float = DEFAULT_CONFIG["default_denoise"],
    ):
        super().__init__()
        config = dict(noise_alpha=noise_alpha, scale_factor=scale_factor, default_num_inference_steps=default_num_inference_steps,
                      default_solver=default_solver, codec_spec=codec_spec,
                      default_back_projection_steps=default_back_projection_steps,
                      default_cascade_detail=default_cascade_detail, default_denoise=default_denoise)  # fmt: skip
        check_config(**config)
        for name, network in (("flow", flow), ("cascade flow", cascade_flow)):
            skip_alpha = getattr(getattr(network, "config", None), "skip_noise_alpha", None)
            if skip_alpha is not None and abs(float(skip_alpha) - float(noise_alpha)) > 1e-6:
                raise ValueError(f"noise_alpha {noise_alpha} differs from the one the {name}'s Gaussian skip assumes ({skip_alpha})")
        if faithful_flow is not None:
            check_blendable(faithful_flow, flow)
        self.register_modules(flow=flow, codec=codec, cascade_flow=cascade_flow, faithful_flow=faithful_flow)
        self._runtime = "torch"
        self._engines = EngineCache()  # (runtime, flow name, denoise) -> engine
        self._blends: dict[float, torch.nn.Module] = {}  # denoise -> the blended flow (flowup.denoise)
        for key in ("noise_alpha", "default_cascade_detail", "default_denoise"):
            config[key] = float(config[key])
        self.register_to_config(**config)

    def stage_count(self, scale: int) -> int:
        """How many stages of this model's factor ``scale`` takes (x2 model: 2 -> 1, 4 -> 2, 8 -> 3);
        raises ``ValueError`` for a scale it cannot make."""
        factor = int(self.config.scale_factor)
        stages = round(math.log(scale, factor)) if isinstance(scale, int) and scale > 1 else 0
        if stages < 1 or factor**stages != scale or scale > 8:
            allowed = ", ".join(str(factor**k) for k in range(1, 4) if factor**k <= 8)
            raise ValueError(f"scale must be one of {allowed} for this x{factor} model, got {scale!r}")
        return stages

    # ----------------------------------------------------------------------------------------
    # runtime and networks

    @property
    def runtime(self) -> str:
        """The runtime asked for: ``"auto"`` or a name of :data:`flowup.runtimes.RUNTIMES`."""
        return self._runtime

    def set_runtime(self, runtime: str) -> "FlowUpPipeline":
        """Run the networks with ``runtime`` (:data:`flowup.runtimes.RUNTIME_NAMES`; one that cannot
        apply here raises at call time). Returns the pipeline."""
        self._runtime = check_runtime_name(runtime)
        return self

    def active_runtime(self) -> str:
        """The runtime a call would use now (:func:`flowup.runtimes.choose_runtime`; raises
        :class:`~flowup.runtimes.RuntimeUnavailableError` for one that cannot run here)."""
        return self._runtime_on(self._execution_device)

    def _runtime_on(self, device: torch.device) -> str:
        # diffusers' _execution_device walks every module (~8 ms): callers look it up once.
        if self._runtime == "torch":
            return "torch"
        return choose_runtime(self._runtime, self.flow, self.codec, device)

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

    def engine(self, stage: int = 0, denoise: float | None = None) -> Engine:
        """The networks that x2 stage ``stage`` (0 = the first) of a call runs now, under the active
        runtime: later stages run ``cascade_flow`` where the model has one, else ``flow`` (at
        ``denoise``; None: the model's default, :meth:`resolve_denoise`)."""
        return self._engine_on(self._execution_device, stage, denoise)

    def _engine_on(self, device: torch.device, stage: int, denoise: float | None) -> Engine:
        denoise = self.resolve_denoise(denoise)
        name = "cascade_flow" if stage > 0 and self.cascade_flow is not None else "flow"
        flow = self.cascade_flow if name == "cascade_flow" else self.flow_at(denoise)
        if name == "cascade_flow" or self.faithful_flow is None:
            denoise = None  # one network whatever the setting: one engine
        return self._engines.get(self._runtime_on(device), (name, denoise), flow, self.codec, float(self.config.noise_alpha),
                                 int(self.config.scale_factor))  # fmt: skip

    def x2_stage(self, stage: int = 0, denoise: float | None = None) -> X2Stage:
        """Stage ``stage`` of a call (:class:`flowup.stage.X2Stage`) with :meth:`engine`'s networks."""
        device = self._execution_device
        return X2Stage(self._engine_on(device, stage, denoise), self.codec, int(self.config.scale_factor),
                       float(self.config.noise_alpha), device)  # fmt: skip

    # ----------------------------------------------------------------------------------------
    # inference

    def check_inputs(
        self,
        scale: int,
        num_inference_steps: int | None,
        solver: str | None,
        output_type: str,
        latent_upsample: str,
        back_projection_steps: int | None,
        input_back_projection_steps: int,
        detail: float | tuple[float, ...] | None,
        tile_size: int | None = None,
        tile_overlap: int | None = None,
        codec_tile_size: int | None = None,
    ) -> list[StageSettings]:
        """Check a call's arguments (``ValueError`` names the first bad one) and fill in the config's
        defaults: one :class:`~flowup.stage.StageSettings` per x2 stage."""
        stages = self.stage_count(scale)
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
        for name, value in (("back_projection_steps", back_projection_steps),
                            ("input_back_projection_steps", input_back_projection_steps)):  # fmt: skip
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"{name} must be an integer >= 0, got {value!r}")
        if detail is None:  # x2: the flow's output; x4 (two stages): the model's measured cascade setting
            detail = 1.0 if stages == 1 else self.config.get("default_cascade_detail", 1.0)
        return [StageSettings(steps, solver, stage_detail, back_projection_steps, tile_size, tile_overlap, codec_tile_size)
                for stage_detail in check_detail(detail, stages)]  # fmt: skip

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
        detail: float | tuple[float, ...] | None = None,
        input_back_projection_steps: int = 0,
        denoise: float | None = None,
    ) -> FlowUpPipelineOutput | tuple:
        r"""Upscale ``image`` (PIL images of any mode, or float tensors ``(N, 3, h, w)`` in [0, 1])
        or ``latents`` (``(N, C, h, w)`` of this codec) by ``scale`` (2, 4 or 8), ``generator``
        (one, or one per image) seeding the source noise. Defaults come from the config; the
        arguments are checked by :meth:`check_inputs` and documented in docs/upscale.md
        ("Python API"): ``num_inference_steps`` (0: no flow, the PSU baseline), ``solver``,
        ``detail`` (share of the flow's added detail kept, per stage), ``back_projection_steps``
        (after each stage), ``input_back_projection_steps`` (x4 / x8: the final output onto the
        call's input), ``denoise`` (0 to 1, :mod:`flowup.denoise`), the tile sizes (latent pixels;
        None automatic, 0 untiled), ``latent_upsample`` (``"pixel"`` or ``"bilinear"``) and
        ``progress_callback(fraction)`` (the share of the call's work done, weighted by cost).

        Returns:
            :class:`FlowUpPipelineOutput`: ``images`` (``output_type`` ``pil``, ``pt``, ``np`` or
            ``latent``) exactly ``scale`` times the input size, and ``nfe``, the model evaluations
            per sample summed over stages; a tuple ``(images, nfe)`` without ``return_dict``.
        """
        settings = self.check_inputs(scale, num_inference_steps, solver, output_type, latent_upsample,
                                     back_projection_steps, input_back_projection_steps, detail, tile_size,
                                     tile_overlap, codec_tile_size)  # fmt: skip
        denoise = self.resolve_denoise(denoise)
        stages = [self.x2_stage(k, denoise) for k in range(len(settings))]
        items = self.prepare_images(image, latents, latent_upsample, codec_tile_size, stages[0])
        generators = per_image_generators(generator, len(items))
        # Same-size inputs run as one batch; mixed sizes run one by one (noise is per image either way).
        same_size = len({tuple(i.rgb.shape) for i in items}) == 1
        groups = [list(range(len(items)))] if same_size else [[i] for i in range(len(items))]
        progress = WorkProgress(progress_callback, sum(self._work(item.rgb, settings) for item in items))
        results: list[tuple[torch.Tensor, torch.Tensor]] = [None] * len(items)  # type: ignore[list-item]
        nfe_total = 0
        for group in groups:
            rgb = lr = prefilter(torch.stack([items[i].rgb for i in group]), denoise)
            source = torch.stack([items[i].latent for i in group]) if items[group[0]].latent is not None else None
            group_nfe = 0
            for k, (stage, stage_settings) in enumerate(zip(stages, settings)):
                with self._step_bar(stage_settings) as bar:
                    result = stage.run(rgb, [generators[i] for i in group], stage_settings, source if k == 0 else None,
                                       progress, bar.update if bar is not None else None)  # fmt: skip
                rgb, group_nfe = result.images, group_nfe + result.nfe
            if len(stages) > 1 and input_back_projection_steps:  # pin the final output to the call's input
                rgb = back_project(rgb, lr.to(rgb), input_back_projection_steps)
            nfe_total = max(nfe_total, group_nfe)  # adaptive solvers: the most any image needed
            for j, i in enumerate(group):
                results[i] = (rgb[j], result.latent[j])

        images = to_output([r[0] for r in results], [r[1] for r in results], items, scale, output_type)
        self.maybe_free_model_hooks()
        return FlowUpPipelineOutput(images=images, nfe=nfe_total) if return_dict else (images, nfe_total)

    def prepare_images(self, image: Any, latents: torch.Tensor | None, latent_upsample: str,
                       codec_tile_size: int | None, stage: X2Stage) -> list[InputImage]:  # fmt: skip
        """The call's inputs as :class:`~flowup.pipeline_io.InputImage` items: images as given,
        latents decoded with the codec (by ``stage``'s engine), kept for a bilinear source."""
        if (image is None) == (latents is None):
            raise ValueError("pass exactly one of image= or latents=")
        if latents is None:
            return images_from(image)

        def decode(z: torch.Tensor) -> torch.Tensor:  # the stage's own decode step, uncropped
            size = (self.codec.downscale * z.shape[-2], self.codec.downscale * z.shape[-1])
            return stage.decode(z.to(self._execution_device), size, codec_tile_size)

        return latents_from(latents, self.codec.latent_channels, decode, keep_latents=latent_upsample == "bilinear")

    def _work(self, rgb: torch.Tensor, settings: list[StageSettings]) -> float:
        """The progress weight of upscaling one ``(3, h, w)`` image through the stages of ``settings``."""
        factor, pixels = int(self.config.scale_factor), rgb[0].numel()
        return sum(WorkProgress.stage_weight(pixels * factor ** (2 * k + 2), s.expected_nfe, s.back_projection_steps)
                   for k, s in enumerate(settings))  # fmt: skip

    def _step_bar(self, settings: StageSettings) -> contextlib.AbstractContextManager:
        """The diffusers progress bar over one stage's ODE evaluations (none without the flow)."""
        if settings.steps == 0:
            return contextlib.nullcontext()
        total = settings.expected_nfe if settings.solver in FIXED_STEP_METHODS else None
        return self.progress_bar(total=total)

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
        runtime: str = AUTO,
        **kwargs: Any,
    ) -> "FlowUpPipeline":
        """Load a folder written by :meth:`save_pretrained` (or a hub id, downloaded by diffusers).

        ``codec``: use this codec instead of the saved one / the one ``codec_spec`` names.
        ``torch_dtype``: cast the weights (default: float32). ``runtime``: see :meth:`set_runtime`
        (default ``"auto"``). The config in ``model_index.json`` is checked before any weights are read.
        """
        check_runtime_name(runtime)
        folder, params, flow, codec, optional = load_model_folder(pretrained_model_name_or_path, codec, torch_dtype,
                                                                  **kwargs)  # fmt: skip
        pipe = cls(flow=flow, codec=codec, **optional, **params)
        pipe.register_to_config(_name_or_path=str(pretrained_model_name_or_path))
        return pipe.set_runtime(runtime)
