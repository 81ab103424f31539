"""Boosting a base text-to-image model: a frozen diffusers pipeline makes a small image, flowup
makes it ``scale`` times larger.

Any diffusers text-to-image pipeline whose ``__call__`` takes ``prompt``, ``height``, ``width``,
``generator`` and ``output_type`` works (Stable Diffusion 1.x / 2.x, LCM and LCM-LoRA, SDXL,
SD3, FLUX family ...)::

    import torch
    from diffusers import DiffusionPipeline
    from flowup import BoostedTextToImage, FlowUpPipeline

    base = DiffusionPipeline.from_pretrained("path/to/stable-diffusion-v1-5").to("cuda")
    pipe = BoostedTextToImage(base, FlowUpPipeline.from_pretrained("path/to/flowup-model").to("cuda"))
    out = pipe("a cat on a sofa", base_size=512, scale=2, generator=torch.Generator("cuda").manual_seed(0))
    out.images[0].save("cat_1024.png"); out.base_images[0].save("cat_512.png"); print(out.timings)

This class is the one way to run the chain: ``pipe(prompt, ...)`` runs :meth:`BoostedTextToImage.generate_base`
then :meth:`BoostedTextToImage.upscale`, which ``flowup generate`` calls separately (so that
``--offload`` releases the base model once per run); one seeded generator per image drives both.

Two ways to hand the base result to flowup (``upsample_in``):

- ``"pixels"`` (default, the paper's PSU source): the base returns latents, they are decoded with
  the base model's own VAE (honouring ``scaling_factor`` / ``shift_factor``), and flowup upsamples
  that image in pixels and re-encodes it with its own codec. The codecs may differ.
- ``"latents"``: only when the base VAE *is* flowup's codec (a ``DiffusersVAECodec`` wrapping the
  same VAE weights). The base latents go straight to ``FlowUpPipeline(latents=...)`` and are
  upsampled bilinearly in latent space, skipping one VAE decode and one encode. That source is
  worse than PSU (see docs/generate.md for the measured gap).

Pipelines that pack their latents (FLUX.1, FLUX.2) or use a VAE without ``scaling_factor`` decode
inside the base pipeline (``output_type="pt"``); their decode time is then part of the base stage.
"""

from __future__ import annotations

import inspect
import time
from dataclasses import dataclass, field
from typing import Any, Literal, Sequence

import torch
from PIL import Image

from flowup.codecs import DiffusersVAECodec

__all__ = [
    "BoostedTextToImage",
    "BoostOutput",
    "BaseStageOutput",
    "StageTimings",
    "NotTextToImageError",
    "is_text_to_image_pipeline",
    "shares_codec",
    "decode_base_latents",
]

UpsampleIn = Literal["pixels", "latents"]
BaseOutput = Literal["auto", "latent", "pt"]

# Arguments every supported base pipeline must accept.
_REQUIRED_CALL_ARGS = ("prompt", "height", "width", "generator", "output_type")


class NotTextToImageError(TypeError):
    """The given pipeline cannot be used as a text-to-image base model."""


@dataclass
class StageTimings:
    """Wall-clock seconds of each stage of one :class:`BoostedTextToImage` call (device-synchronised).

    - ``base``: the base pipeline call (text encoding + denoising; also its VAE decode when the
      base decodes itself, see ``base_decode_included``);
    - ``base_decode``: decoding the base latents with the base VAE (0 when nothing was decoded);
    - ``flow``: the whole flowup call (encode, ODE integration, decode, back-projection);
    - ``offload``: moving the base model off the device (``offload=True``).
    """

    base: float = 0.0
    base_decode: float = 0.0
    flow: float = 0.0
    offload: float = 0.0
    base_decode_included: bool = False

    @property
    def total(self) -> float:
        return self.base + self.base_decode + self.flow + self.offload

    def __add__(self, other: "StageTimings") -> "StageTimings":
        return StageTimings(
            base=self.base + other.base,
            base_decode=self.base_decode + other.base_decode,
            flow=self.flow + other.flow,
            offload=self.offload + other.offload,
            base_decode_included=self.base_decode_included or other.base_decode_included,
        )

    def summary(self) -> str:
        """One line, e.g. ``base 2.10 s | base decode 0.20 s | flowup 0.90 s (encode + flow + decode) | total 3.20 s``."""
        parts = [f"base {self.base:.2f} s" + (" (incl. its VAE decode)" if self.base_decode_included else "")]
        if self.base_decode:
            parts.append(f"base decode {self.base_decode:.2f} s")
        if self.offload:
            parts.append(f"offload {self.offload:.2f} s")
        parts.append(f"flowup {self.flow:.2f} s (encode + flow + decode)")
        parts.append(f"total {self.total:.2f} s")
        return " | ".join(parts)


@dataclass
class BaseStageOutput:
    """What the base stage hands to flowup.

    - ``images``: ``(N, 3, h, w)`` float in [0, 1] on the CPU, or None when only latents were kept;
    - ``latents``: ``(N, C, h/8, w/8)`` base latents in the VAE's normalised space (or None);
    - ``prompts``: the prompt of each of the N images.
    """

    images: torch.Tensor | None
    latents: torch.Tensor | None
    prompts: list[str]
    timings: StageTimings = field(default_factory=StageTimings)


@dataclass
class BoostOutput:
    """Result of :meth:`BoostedTextToImage.__call__`.

    - ``images``: the boosted images, ``scale`` times the base size (list of PIL, or a float
      tensor ``(N, 3, H, W)`` in [0, 1] for ``output_type="pt"``);
    - ``base_images``: the base model's images, same type (None when not decoded);
    - ``prompts``: the prompt of each image; ``timings``: :class:`StageTimings`; ``nfe``: flow
      model evaluations per image.
    """

    images: list[Image.Image] | torch.Tensor
    base_images: list[Image.Image] | torch.Tensor | None
    prompts: list[str]
    timings: StageTimings
    nfe: int | None = None


def is_text_to_image_pipeline(pipeline: Any) -> bool:
    """True when ``pipeline.__call__`` accepts prompt, height, width, generator and output_type."""
    call = getattr(pipeline, "__call__", None)
    if call is None or not hasattr(pipeline, "components"):
        return False
    params = inspect.signature(call).parameters
    return all(name in params for name in _REQUIRED_CALL_ARGS)


def _call_parameters(pipeline: Any) -> set[str]:
    params = inspect.signature(pipeline.__call__).parameters
    return set(params)


def _synchronize(device: torch.device | str | None) -> None:
    device = torch.device(device) if device is not None else None
    if device is not None and device.type == "cuda" and torch.cuda.is_available():
        torch.cuda.synchronize(device)


def _execution_device(pipeline: Any) -> torch.device:
    device = getattr(pipeline, "_execution_device", None)
    if device is None:
        device = getattr(pipeline, "device", torch.device("cpu"))
    return torch.device(device)


def _has_packed_latents(base: Any) -> bool:
    """FLUX-style pipelines return packed token latents that only the pipeline knows how to unpack."""
    return any(hasattr(base, name) for name in ("_unpack_latents", "_unpack_latents_with_ids"))


def _can_decode_latents(base: Any) -> bool:
    vae = getattr(base, "vae", None)
    return (
        vae is not None
        and hasattr(vae, "decode")
        and getattr(vae.config, "scaling_factor", None) is not None
        and not _has_packed_latents(base)
    )


def decode_base_latents(vae: torch.nn.Module, latents: torch.Tensor) -> torch.Tensor:
    """Decode base-pipeline latents with the base model's own VAE, as the base pipeline would.

    ``latents``: ``(N, C, h, w)`` in the VAE's normalised space (``(z - shift) * scaling``, or
    SDXL-style ``latents_mean`` / ``latents_std`` when the VAE config has them). Returns images
    ``(N, 3, 8h, 8w)`` float32 in [0, 1], on the latents' device. fp16 VAEs with
    ``force_upcast`` decode in float32, as SDXL does.
    """
    cfg = vae.config
    if latents.ndim != 4 or latents.shape[1] != cfg.latent_channels:
        raise ValueError(
            f"base latents of shape {tuple(latents.shape)} do not fit the base VAE "
            f"({cfg.latent_channels} latent channels); use base_output='pt'"
        )
    scaling = float(cfg.scaling_factor)
    shift = float(getattr(cfg, "shift_factor", None) or 0.0)
    mean, std = getattr(cfg, "latents_mean", None), getattr(cfg, "latents_std", None)
    vae_dtype = next(vae.parameters()).dtype
    upcast = vae_dtype == torch.float16 and bool(getattr(cfg, "force_upcast", False))
    dtype = torch.float32 if upcast else vae_dtype
    if upcast:
        vae.to(dtype=torch.float32)
    try:
        z = latents.to(dtype=dtype)  # on the base's execution device (offload hooks move the VAE there)
        if mean is not None and std is not None:
            mean_t = torch.tensor(mean, device=z.device, dtype=dtype).view(1, -1, 1, 1)
            std_t = torch.tensor(std, device=z.device, dtype=dtype).view(1, -1, 1, 1)
            z = z * std_t / scaling + mean_t
        else:
            z = z / scaling + shift
        with torch.no_grad():
            images = vae.decode(z, return_dict=False)[0]
    finally:
        if upcast:
            vae.to(dtype=torch.float16)
    return (images.float() / 2 + 0.5).clamp(0, 1)


def shares_codec(base: Any, upscaler: Any) -> tuple[bool, str]:
    """Whether the base VAE is the flowup pipeline's codec, so base latents can be passed directly.

    Returns ``(True, "")`` or ``(False, reason)``. Same codec means: flowup's codec is a
    :class:`~flowup.DiffusersVAECodec` wrapping a VAE of the same class and latent normalisation
    with identical weights, and the base latents are plain ``(z - shift) * scaling`` (no SDXL-style
    ``latents_mean``), i.e. both live in exactly the same normalised latent space.
    """
    vae = getattr(base, "vae", None)
    codec = getattr(upscaler, "codec", None)
    if vae is None:
        return False, "the base pipeline has no `vae`"
    if _has_packed_latents(base):
        return False, f"{type(base).__name__} returns packed latents"
    if not isinstance(codec, DiffusersVAECodec):
        return False, f"the flowup codec is a {type(codec).__name__}, not the base model's {type(vae).__name__}"
    if getattr(vae.config, "latents_mean", None) is not None:
        return False, "the base VAE normalises latents with latents_mean/latents_std"
    if codec.vae is vae:
        return True, ""
    if type(codec.vae) is not type(vae):
        return False, f"the flowup codec wraps a {type(codec.vae).__name__}, the base uses a {type(vae).__name__}"
    for key in ("latent_channels", "scaling_factor", "shift_factor"):
        if getattr(codec.vae.config, key, None) != getattr(vae.config, key, None):
            return False, f"the VAE configs differ in {key}"
    ours, theirs = codec.vae.state_dict(), vae.state_dict()
    if ours.keys() != theirs.keys():
        return False, "the VAE architectures differ"
    for key, value in ours.items():
        other = theirs[key].to(value.device)
        if value.shape != other.shape or not torch.equal(*_at_common_precision(value, other)):
            return False, "the VAE weights differ"
    return True, ""


def _at_common_precision(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Both tensors in the less precise of their dtypes (a float16 copy of a float32 VAE is the same VAE)."""
    if a.dtype == b.dtype or not (a.is_floating_point() and b.is_floating_point()):
        return a, b
    low = a.dtype if torch.finfo(a.dtype).bits < torch.finfo(b.dtype).bits else b.dtype
    return a.to(low), b.to(low)


def _to_pil(images: torch.Tensor) -> list[Image.Image]:
    array = (images.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    return [Image.fromarray(a) for a in array]


def _as_size(base_size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(base_size, int):
        height = width = base_size
    else:
        height, width = (int(v) for v in base_size)
    if height <= 0 or width <= 0:
        raise ValueError(f"base_size must be positive, got {base_size!r}")
    return height, width


class BoostedTextToImage:
    """A frozen text-to-image ``base`` pipeline chained with a :class:`~flowup.FlowUpPipeline`.

    Args:
        base: any diffusers text-to-image pipeline (see :func:`is_text_to_image_pipeline`).
        upscaler: a ``FlowUpPipeline``.
        upsample_in: ``"pixels"`` (decode with the base VAE, flowup re-encodes: any codecs) or
            ``"latents"`` (base latents straight to flowup, upsampled bilinearly in latent
            space: needs :func:`shares_codec`).
        base_output: ``"auto"`` (latents when the base VAE can be driven from outside, else
            pixels), ``"latent"`` or ``"pt"`` (the base decodes its own images).
        offload: move the base model off the accelerator before the flow stage (and back for the
            next base stage) so that both fit a small GPU. When ``base.enable_model_cpu_offload()``
            was called, diffusers already does this and nothing more is moved.
    """

    def __init__(
        self,
        base: Any,
        upscaler: Any,
        upsample_in: UpsampleIn = "pixels",
        base_output: BaseOutput = "auto",
        offload: bool = False,
    ):
        if not is_text_to_image_pipeline(base):
            raise NotTextToImageError(
                f"{type(base).__name__} is not a text-to-image pipeline: its __call__ must accept "
                + ", ".join(_REQUIRED_CALL_ARGS)
            )
        if upsample_in not in ("pixels", "latents"):
            raise ValueError(f"upsample_in must be 'pixels' or 'latents', got {upsample_in!r}")
        if base_output not in ("auto", "latent", "pt"):
            raise ValueError(f"base_output must be 'auto', 'latent' or 'pt', got {base_output!r}")
        if base_output == "latent" and not _can_decode_latents(base):
            raise ValueError(f"{type(base).__name__}'s latents cannot be decoded outside it; use base_output='pt'")
        if upsample_in == "latents":
            same, reason = shares_codec(base, upscaler)
            if not same:
                raise ValueError(f"upsample_in='latents' needs the base VAE to be flowup's codec, but {reason}")
            if base_output == "pt":
                raise ValueError("upsample_in='latents' needs the base latents: use base_output='auto' or 'latent'")
        self.base = base
        self.upscaler = upscaler
        self.upsample_in: UpsampleIn = upsample_in
        self.base_output: BaseOutput = base_output
        self.offload = offload
        self._offloaded_from: torch.device | None = None
        self._base_params = _call_parameters(base)

    # ------------------------------------------------------------------ stages

    @property
    def _uses_latents(self) -> bool:
        if self.base_output == "auto":
            return _can_decode_latents(self.base)
        return self.base_output == "latent"

    def _base_kwargs(self, **kwargs: Any) -> dict[str, Any]:
        call: dict[str, Any] = {}
        for name, value in kwargs.items():
            if value is None:
                continue
            if name not in self._base_params:
                raise TypeError(f"{type(self.base).__name__} does not take the argument {name!r}")
            call[name] = value
        return call

    def generate_base(
        self,
        prompt: str | list[str],
        negative_prompt: str | list[str] | None = None,
        base_size: int | Sequence[int] = 512,
        num_images_per_prompt: int = 1,
        generator: torch.Generator | list[torch.Generator] | None = None,
        num_inference_steps: int | None = None,
        guidance_scale: float | None = None,
        decode: bool = True,
        **base_kwargs: Any,
    ) -> BaseStageOutput:
        """Run the base model at ``base_size`` (int or ``(height, width)``).

        Returns base images ``(N, 3, h, w)`` in [0, 1] (when ``decode`` or when the base decodes
        itself) and, on the latent route, the base latents. ``base_kwargs`` go to the base pipeline.
        """
        height, width = _as_size(base_size)
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        if not prompts:
            raise ValueError("no prompt given")
        self._restore_base()
        device = _execution_device(self.base)
        use_latents = self._uses_latents
        kwargs = self._base_kwargs(
            prompt=prompts,
            negative_prompt=negative_prompt,
            height=height,
            width=width,
            generator=generator,
            num_inference_steps=num_inference_steps,
            guidance_scale=guidance_scale,
            num_images_per_prompt=num_images_per_prompt if num_images_per_prompt != 1 else None,
            output_type="latent" if use_latents else "pt",
            **base_kwargs,
        )
        timings = StageTimings(base_decode_included=not use_latents)
        _synchronize(device)
        start = time.perf_counter()
        with torch.no_grad():
            result = self.base(**kwargs)
        _synchronize(device)
        timings.base = time.perf_counter() - start
        output = result.images if hasattr(result, "images") else result[0]
        images = latents = None
        if use_latents:
            latents = output
            if decode:
                start = time.perf_counter()
                images = decode_base_latents(self.base.vae, latents)
                _synchronize(device)
                timings.base_decode = time.perf_counter() - start
                images = images.cpu()
        else:
            images = _images_to_tensor(output)
        per_prompt = [p for p in prompts for _ in range(num_images_per_prompt)]
        return BaseStageOutput(images=images, latents=latents, prompts=per_prompt, timings=timings)

    def upscale(
        self,
        base: BaseStageOutput,
        scale: int = 2,
        num_inference_steps: int | None = None,
        solver: str | None = None,
        generator: torch.Generator | list[torch.Generator] | None = None,
        output_type: Literal["pil", "pt"] = "pil",
        **flow_kwargs: Any,
    ) -> BoostOutput:
        """Lift a base result ``scale`` times with flowup (``flow_kwargs`` go to the FlowUpPipeline)."""
        timings = StageTimings()
        if self.offload:
            start = time.perf_counter()
            self.release_base()
            timings.offload = time.perf_counter() - start
        device = _execution_device(self.upscaler)
        common = dict(
            scale=scale,
            num_inference_steps=num_inference_steps,
            solver=solver,
            generator=generator,
            output_type="pt",
            **flow_kwargs,
        )
        if self.upsample_in == "latents":
            if base.latents is None:
                raise ValueError("upsample_in='latents' but the base stage kept no latents")
            call = dict(latents=base.latents.to(device), **common)
            if "latent_upsample" in _call_parameters(self.upscaler):
                call["latent_upsample"] = "bilinear"
        else:
            if base.images is None:
                raise ValueError("the base stage returned no images to upscale")
            call = dict(image=base.images.to(device), **common)
        _synchronize(device)
        start = time.perf_counter()
        with torch.no_grad():
            out = self.upscaler(**call)
        _synchronize(device)
        elapsed = time.perf_counter() - start
        timings.flow = elapsed  # the flowup call: encode, flow, decode and back-projection
        images = out.images
        base_images = base.images
        if output_type == "pil":
            images = _to_pil(images)
            base_images = _to_pil(base_images) if base_images is not None else None
        elif output_type != "pt":
            raise ValueError(f"output_type must be 'pil' or 'pt', got {output_type!r}")
        return BoostOutput(
            images=images,
            base_images=base_images,
            prompts=base.prompts,
            timings=base.timings + timings,
            nfe=getattr(out, "nfe", None),
        )

    def __call__(
        self,
        prompt: str | list[str],
        negative_prompt: str | list[str] | None = None,
        base_size: int | Sequence[int] = 512,
        scale: int = 2,
        num_images_per_prompt: int = 1,
        generator: torch.Generator | list[torch.Generator] | None = None,
        num_inference_steps: int | None = None,
        guidance_scale: float | None = None,
        flow_steps: int | None = None,
        solver: str | None = None,
        back_projection_steps: int | None = None,
        flow_generator: torch.Generator | list[torch.Generator] | None = None,
        output_type: Literal["pil", "pt"] = "pil",
        return_base_images: bool = True,
        **base_kwargs: Any,
    ) -> BoostOutput:
        """Text -> base image at ``base_size`` -> boosted image at ``scale * base_size``.

        ``generator`` seeds the base model and, unless ``flow_generator`` is given, continues into
        the flow stage's noise, so one seeded generator reproduces the whole chain.
        ``num_inference_steps`` / ``guidance_scale`` / ``base_kwargs`` are the base model's;
        ``flow_steps`` / ``solver`` / ``back_projection_steps`` are flowup's (default: the model's).
        With ``upsample_in="latents"`` base images are decoded only if ``return_base_images``.
        """
        decode = self.upsample_in == "pixels" or return_base_images
        base = self.generate_base(
            prompt,
            negative_prompt=negative_prompt,
            base_size=base_size,
            num_images_per_prompt=num_images_per_prompt,
            generator=generator,
            num_inference_steps=num_inference_steps,
            guidance_scale=guidance_scale,
            decode=decode,
            **base_kwargs,
        )
        out = self.upscale(
            base,
            scale=scale,
            num_inference_steps=flow_steps,
            solver=solver,
            generator=flow_generator if flow_generator is not None else generator,
            output_type=output_type,
            back_projection_steps=back_projection_steps,
        )
        if not return_base_images:
            out.base_images = None
        return out

    # ------------------------------------------------------------------ memory

    def release_base(self) -> None:
        """Move the base model off the accelerator (to the CPU) and free the cached memory.

        A no-op when the base already lives on the CPU or uses diffusers' model CPU offload hooks.
        """
        if getattr(self.base, "_offload_device", None) is not None:
            self.base.maybe_free_model_hooks()
        else:
            device = torch.device(self.base.device)
            if device.type != "cpu":
                self._offloaded_from = device
                self.base.to("cpu")
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def _restore_base(self) -> None:
        if self._offloaded_from is not None:
            self.base.to(self._offloaded_from)
            self._offloaded_from = None


def _images_to_tensor(output: Any) -> torch.Tensor:
    """A base pipeline's ``output_type="pt"`` result (tensor or list of PIL) -> ``(N, 3, h, w)`` in [0, 1]."""
    if isinstance(output, torch.Tensor):
        return output.detach().float().clamp(0, 1).cpu()
    if isinstance(output, (list, tuple)) and output and isinstance(output[0], Image.Image):
        import numpy as np

        array = np.stack([np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0 for im in output])
        return torch.from_numpy(array).permute(0, 3, 1, 2).contiguous()
    raise TypeError(f"unexpected base pipeline output of type {type(output).__name__}")

