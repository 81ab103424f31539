"""ComfyUI nodes for flowup: load a model once, upscale ComfyUI images x2 or x4.

- :class:`FlowUpLoader` loads a flowup model folder (the packaged ``taef2-x2`` when the path is
  empty) on a device and dtype, and returns it as the custom type ``FLOWUP_MODEL``.
- :class:`FlowUpUpscale` upscales an ``IMAGE`` (ComfyUI's float tensor ``(B, H, W, C)`` in [0, 1])
  with it, to ``(B, scale H, scale W, C)``.

ComfyUI loads these through ``comfyui/__init__.py`` at the repository root (see docs/comfyui.md).
Nothing here imports ComfyUI, torch or diffusers at import time: inside ComfyUI the progress bar
(``comfy.utils.ProgressBar``) and the default device (``comfy.model_management``) are used when
they import, and the nodes also run without ComfyUI (the tests call them directly).

Seeds follow ``flowup generate``: image ``i`` of a batch draws its noise from its own generator
seeded with ``seed + i``, so image 0 with seed ``s`` matches ``flowup upscale --seed s``.
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING

from flowup.runtimes import RUNTIME_NAMES, RUNTIMES

if TYPE_CHECKING:
    import torch

    from flowup.pipeline import FlowUpPipeline

__all__ = ["MODEL_TYPE", "NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "FlowUpLoader", "FlowUpUpscale"]

MODEL_TYPE = "FLOWUP_MODEL"
SEED_MAX = 2**64 - 1  # what torch.Generator.manual_seed takes; ComfyUI's own seed widgets use the same range
PROGRESS_STEPS = 100  # the ComfyUI progress bar counts percent of the call's work
DEVICES = ["auto", "cpu", "cuda"]
DTYPES = ["auto", "float32", "bfloat16", "float16"]
# The packaged model's defaults (flowup/pretrained/taef2-x2/model_index.json; a test keeps them in step).
DEFAULT_STEPS = 1
DEFAULT_BACK_PROJECTION = 5


class FlowUpLoader:
    """Load a flowup model folder: ``(FLOWUP_MODEL,)``, a :class:`~flowup.pipeline.FlowUpPipeline`."""

    DESCRIPTION = (
        "Load a flowup flow-matching upscaler. An empty path loads the model shipped with flowup (taef2-x2); "
        "otherwise give the absolute path of a folder written by FlowUpPipeline.save_pretrained or "
        "`python -m train export`."
    )
    CATEGORY = "image/upscaling"
    RETURN_TYPES = (MODEL_TYPE,)
    RETURN_NAMES = ("flowup_model",)
    OUTPUT_TOOLTIPS = ("The loaded flowup model, for FlowUp Upscale.",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, dict[str, tuple]]:  # ComfyUI's name for it
        return {
            "required": {
                "model_path": ("STRING", {"default": "", "multiline": False,
                                          "tooltip": "Model folder; empty = the packaged taef2-x2 model."}),
                "device": (DEVICES, {"default": "auto",
                                     "tooltip": "auto: ComfyUI's device inside ComfyUI, else cuda when available."}),
                "dtype": (DTYPES, {"default": "auto",
                                   "tooltip": "auto: float16 on a GPU, float32 on the CPU (float16 is refused there)."}),
                "runtime": (list(RUNTIME_NAMES), {"default": "auto",
                                                  "tooltip": "What runs the networks; auto picks the fastest one here, "
                                                             "auto-exact the fastest with float32's output. "
                                                             + "; ".join(f"{r.name}: {r.description}" for r in RUNTIMES.values())}),
            }
        }  # fmt: skip

    def load(self, model_path: str, device: str = "auto", dtype: str = "auto", runtime: str = "auto") -> tuple:
        """Load the model folder at ``model_path`` (empty: the packaged one) on ``device`` in ``dtype``."""
        from flowup.errors import UsageError
        from flowup.loading import load_upscaler

        try:
            with _outside_inference_mode():  # ComfyUI runs nodes in inference mode: keep the weights ordinary tensors
                pipe = load_upscaler(model_path.strip() or None, (_comfy_device() or "auto") if device == "auto" else device,
                                     dtype, runtime)  # fmt: skip
        except UsageError as err:  # its text names CLI options (--dtype ...): say it in node terms
            raise ValueError(f"FlowUpLoader: {str(err).replace('--', '')}") from None
        return (pipe,)


class FlowUpUpscale:
    """Upscale ComfyUI images with a flowup model: ``IMAGE (B, H, W, C)`` -> ``(B, sH, sW, C)``."""

    DESCRIPTION = (
        "Upscale images x2 or x4 (the x2 model twice) with flowup: bicubic upsampling, encoding with the model's "
        "codec, a flow-matching transport to the high-res latent, decoding, then back-projection onto the input. "
        "Same seed, same output; image i of a batch uses seed + i. An alpha channel (RGBA input) is upscaled "
        "bicubically and re-attached."
    )
    CATEGORY = "image/upscaling"
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("image",)
    OUTPUT_TOOLTIPS = ("The upscaled images, exactly scale times the input size.",)
    FUNCTION = "upscale"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, dict[str, tuple]]:  # ComfyUI's name for it
        return {
            "required": {
                "model": (MODEL_TYPE, {"tooltip": "From FlowUp Loader."}),
                "image": ("IMAGE", {"tooltip": "Images to upscale, values in [0, 1]."}),
                "scale": ("INT", {"default": 2, "min": 2, "max": 4, "step": 2,
                                  "tooltip": "2, or 4 (the x2 model applied twice)."}),
                "steps": ("INT", {"default": DEFAULT_STEPS, "min": 0, "max": 100,
                                  "tooltip": "Euler steps per x2 stage; 0 = no flow (the codec round trip of the "
                                             "bicubic upsample). The packaged model is trained for 1."}),
                "seed": ("INT", {"default": 0, "min": 0, "max": SEED_MAX,
                                 "tooltip": "Noise seed; image i of the batch uses seed + i."}),
                "detail": ("FLOAT", {"default": -1.0, "min": -1.0, "max": 2.0, "step": 0.05,
                                     "tooltip": "How much of the detail the flow adds to keep, per x2 stage: 0 = none "
                                                "(smooth), 1 = the model's output, 2 = twice as much; -1 = the model's "
                                                "default for the scale (shipped model: 1 at x2, 0.5 at x4)."}),
                "back_projection": ("INT", {"default": DEFAULT_BACK_PROJECTION, "min": 0, "max": 50,
                                            "tooltip": "Consistency steps onto the low-res input after each x2 "
                                                       "stage; 0 = off."}),
                "denoise": ("FLOAT", {"default": -1.0, "min": -1.0, "max": 1.0, "step": 0.05,
                                      "tooltip": "Clean <-> faithful: smooth the input's grain and JPEG / WebP artefacts "
                                                 "away (edges kept) before upscaling; 0 keeps everything the input "
                                                 "holds, 1 cleans most; -1 = the model's default."}),
            }
        }  # fmt: skip

    def upscale(
        self,
        model: FlowUpPipeline,
        image: torch.Tensor,
        scale: int = 2,
        steps: int = DEFAULT_STEPS,
        seed: int = 0,
        detail: float = -1.0,
        back_projection: int = DEFAULT_BACK_PROJECTION,
        denoise: float = -1.0,
    ) -> tuple[torch.Tensor]:
        """``image`` ``(B, H, W, C)`` float, C in (1, 3, 4) -> ``((B, scale H, scale W, 3 or 4),)``
        float32 on the CPU in [0, 1]; C = 1 comes back as RGB, C = 4 keeps its (bicubic) alpha."""
        import torch

        from flowup.resample import upsample

        if image.ndim != 4 or image.shape[-1] not in (1, 3, 4):
            raise ValueError(f"FlowUpUpscale: expected an IMAGE (B, H, W, 1|3|4), got shape {tuple(image.shape)}")
        if not 0 <= seed <= SEED_MAX:
            raise ValueError(f"FlowUpUpscale: seed must be between 0 and 2**64 - 1, got {seed}")
        pixels = image.movedim(-1, 1).float().clamp(0, 1)  # (B, C, H, W); other nodes may overshoot [0, 1] a bit
        rgb = pixels[:, :3].expand(-1, 3, -1, -1)  # greyscale (C = 1) -> RGB
        generators = [torch.Generator().manual_seed((seed + i) % (SEED_MAX + 1)) for i in range(len(pixels))]
        progress = _comfy_progress()
        with _outside_inference_mode():  # as flowup is tested (the call itself is no_grad)
            result = model(
                image=rgb,
                scale=scale,
                num_inference_steps=steps,
                generator=generators,
                output_type="pt",
                back_projection_steps=back_projection,
                detail=None if detail < 0 else detail,  # -1: the pipeline's default at this scale
                denoise=None if denoise < 0 else denoise,  # -1: the model's default
                progress_callback=progress,
            )
        if progress is not None:
            progress(1.0)
        out = result.images.float().cpu().clamp(0, 1)  # (B, 3, sH, sW)
        if pixels.shape[1] == 4:
            out = torch.cat([out, upsample(pixels[:, 3:], scale)], dim=1)
        return (out.movedim(1, -1).contiguous(),)


def _outside_inference_mode() -> contextlib.AbstractContextManager:
    """Leave ``torch.inference_mode`` (where ComfyUI runs every node) for the enclosed block:
    weights loaded inside it would be inference tensors, which nothing can update in place later
    (the pipeline itself also runs under inference mode: ``tests/test_bf16_runtime.py``)."""
    import torch

    return torch.inference_mode(False)


def _comfy_progress() -> Callable[[float], None] | None:
    """A ``progress_callback`` feeding a new ``comfy.utils.ProgressBar`` (ComfyUI's bar, whose hook
    also stops the run when the user cancels), or None outside ComfyUI."""
    try:
        comfy_utils = importlib.import_module("comfy.utils")
    except ImportError:
        return None
    bar = comfy_utils.ProgressBar(PROGRESS_STEPS)
    shown = [-1]

    def report(fraction: float) -> None:
        value = min(PROGRESS_STEPS, max(0, round(fraction * PROGRESS_STEPS)))
        if value != shown[0]:  # one UI message per percent, however many tiles report
            shown[0] = value
            bar.update_absolute(value, PROGRESS_STEPS)

    return report


def _comfy_device() -> torch.device | None:
    """ComfyUI's compute device (``comfy.model_management.get_torch_device()``), None outside ComfyUI."""
    try:
        model_management = importlib.import_module("comfy.model_management")
    except ImportError:
        return None
    return model_management.get_torch_device()


NODE_CLASS_MAPPINGS: dict[str, type] = {"FlowUpLoader": FlowUpLoader, "FlowUpUpscale": FlowUpUpscale}
NODE_DISPLAY_NAME_MAPPINGS: dict[str, str] = {"FlowUpLoader": "FlowUp Loader", "FlowUpUpscale": "FlowUp Upscale"}
