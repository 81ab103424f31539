"""A local, offline Gradio app around a :class:`~flowup.FlowUpPipeline` (``flowup demo``).

Upload an image, choose the scale (2 or 4), the ODE steps, ``detail`` (0-2), ``denoise`` (0-1) and the seed; the app
shows bicubic and flowup side by side under a before/after slider, the time the upscale took
(seconds and seconds per output megapixel) and offers the result as a PNG download.

- :func:`upscale_image` is the work itself, without Gradio (tests call it directly); it reads the
  input the way ``flowup upscale`` does (:func:`flowup.image_io.load_image`: EXIF orientation,
  greyscale, palette, 16-bit, alpha upscaled separately), so the PNG it writes is the same as the
  command line's.
- :func:`build_demo` builds the ``gr.Blocks`` app; :func:`launch` starts it on 127.0.0.1;
  :func:`warm_up` runs the model once first, so that the timing shown is that of a warm model.

Offline by construction: importing this module sets ``GRADIO_ANALYTICS_ENABLED=False`` and
``HF_HUB_DISABLE_TELEMETRY=1`` (no telemetry, no version check), the app is launched without share
links, server-side rendering or the MCP server, and the theme uses the fonts bundled with Gradio
(nothing is fetched from a CDN). Gradio itself is imported only inside :func:`build_demo`, so this
module imports without it; :func:`require_gradio` says what to install.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from flowup.errors import one_line

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"  # read by gradio and gradio_client at call time
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

if TYPE_CHECKING:
    from collections.abc import Callable

    import gradio as gr
    import PIL.Image

    from flowup.pipeline import FlowUpPipeline

__all__ = ["GRADIO_MISSING", "MAX_OUTPUT_PIXELS", "DemoResult", "build_demo", "launch", "require_gradio",
           "default_detail", "upscale_image", "warm_up"]  # fmt: skip

GRADIO_MISSING = 'the demo needs gradio: pip install "flowup[demo]"'
MAX_OUTPUT_PIXELS = 4096 * 4096  # refuse uploads whose output would be larger (use flowup upscale for those)
SEED_MAX = 2**64 - 1

TITLE = "flowup: flow-matching upscaler"
INTRO = (
    "Upload an image and press **Upscale**. The slider compares bicubic (left) with flowup (right) "
    "at the output size. Runs on this machine only; nothing is uploaded anywhere."
)


@dataclass
class DemoResult:
    """What one upscale gave: ``image`` (the output, exactly ``scale`` times the input), ``before``
    (the input upsampled bicubically to the same size, for the comparison), the PNG written to
    ``path``, the pipeline's wall-clock ``seconds``, the output ``megapixels`` and ``nfe``."""

    image: PIL.Image.Image
    before: PIL.Image.Image
    path: Path
    seconds: float
    megapixels: float
    input_size: tuple[int, int]
    scale: int
    steps: int
    detail: float
    seed: int
    nfe: int
    denoise: float | None = None

    @property
    def seconds_per_megapixel(self) -> float:
        return self.seconds / max(self.megapixels, 1e-12)

    def summary(self) -> str:
        """One line for the app: sizes, time, s/MP and the settings that reproduce it."""
        (w, h), (out_w, out_h) = self.input_size, self.image.size
        return (
            f"x{self.scale}: {w}x{h} -> {out_w}x{out_h} ({self.megapixels:.2f} MP) in "
            f"**{self.seconds:.2f} s** = **{self.seconds_per_megapixel:.2f} s/MP** "
            f"({self.steps} step{'s' if self.steps != 1 else ''}, detail {self.detail:g}, "
            + (f"denoise {self.denoise:g}, " if self.denoise is not None else "")
            + f"seed {self.seed}, "
            f"{self.nfe} model evaluation{'s' if self.nfe != 1 else ''})"
        )


def upscale_image(
    pipe: FlowUpPipeline,
    image: str | Path | PIL.Image.Image,
    scale: int = 2,
    steps: int | None = None,
    detail: float | None = None,
    seed: int = 0,
    out_dir: str | Path | None = None,
    progress: Callable[[float], None] | None = None,
    max_output_pixels: int = MAX_OUTPUT_PIXELS,
    denoise: float | None = None,
) -> DemoResult:
    """Upscale one image (a file path or a PIL image) with ``pipe`` and write the result as PNG
    into ``out_dir`` (default: a new temporary folder), named ``<input stem>_x<scale>.png``.

    ``steps``: ODE steps per x2 stage (``None``: the model's default; ``0``: no flow). ``detail``:
    the pipeline's ``detail`` (0-2; ``None``: the model's default at ``scale``). ``denoise``: the
    pipeline's ``denoise`` (0-1; ``None``: the model's default). Raises ``ValueError`` (:class:`flowup.image_io.ImageReadError`
    for unreadable files) with a one-line message for bad inputs or settings.
    """
    import PIL.Image
    import torch
    from PIL import ImageOps

    from flowup.image_io import load_image, pil_to_tensor, save_image, tensor_to_pil, upsample_alpha
    from flowup.resample import upsample

    scale, steps, detail, seed = _check_settings(pipe, scale, steps, detail, seed)
    denoise = pipe.resolve_denoise(None if denoise is None or denoise == "" else denoise)
    limit = max_output_pixels // scale**2
    if isinstance(image, PIL.Image.Image):
        if image.width * image.height > limit:
            raise ValueError(f"{image.width}x{image.height} is too large for the demo at x{scale} "
                             f"(limit {limit} input pixels); use flowup upscale")  # fmt: skip
        loaded, stem = pil_to_tensor(ImageOps.exif_transpose(image)), "image"
    else:
        loaded, stem = load_image(image, max_pixels=limit), Path(image).stem or "image"
    height, width = loaded.rgb.shape[-2:]

    started = time.perf_counter()
    result = pipe(
        image=loaded.rgb[None],
        scale=scale,
        num_inference_steps=steps,
        generator=torch.Generator().manual_seed(seed),
        output_type="pt",
        detail=detail,
        denoise=denoise,
        progress_callback=progress,
    )
    seconds = time.perf_counter() - started

    alpha = upsample_alpha(loaded.alpha, scale) if loaded.alpha is not None else None
    after = tensor_to_pil(result.images[0], alpha, loaded.mode)
    before = tensor_to_pil(upsample(loaded.rgb[None], scale)[0], alpha, loaded.mode)
    folder = Path(out_dir) if out_dir is not None else Path(tempfile.mkdtemp(prefix="flowup-demo-"))
    path = save_image(after, folder / uuid.uuid4().hex[:12] / f"{stem}_x{scale}.png")
    return DemoResult(image=after, before=before, path=path, seconds=seconds, megapixels=after.width * after.height / 1e6,
                      input_size=(width, height), scale=scale, steps=steps, detail=detail, seed=seed,
                      nfe=int(result.nfe), denoise=denoise)  # fmt: skip


def warm_up(pipe: FlowUpPipeline, size: int = 64) -> float:
    """Run ``pipe`` once on a small image so that the first upscale a user asks for is timed
    without the one-off costs (kernel selection, bfloat16 weights, ONNX sessions). Returns seconds."""
    import torch

    started = time.perf_counter()
    pipe(image=torch.full((1, 3, size, size), 0.5), generator=torch.Generator().manual_seed(0), output_type="pt")
    return time.perf_counter() - started


def _check_settings(pipe: FlowUpPipeline, scale, steps, detail, seed) -> tuple[int, int, float, int]:
    """Validate what the app (or an API client) sent; returns ``(scale, steps, detail, seed)``."""
    factor = int(pipe.config.scale_factor)
    choices = _scale_choices(pipe)
    try:
        scale = int(scale)
    except (TypeError, ValueError):
        raise ValueError(f"scale must be one of {choices}, got {scale!r}") from None
    if scale not in choices:
        raise ValueError(f"scale must be one of {choices} (the x{factor} model, once or twice), got {scale}")
    if steps is None or steps == "":
        steps = int(pipe.config.default_num_inference_steps)
    if isinstance(steps, float) and steps.is_integer():
        steps = int(steps)
    if not isinstance(steps, int) or isinstance(steps, bool) or not 0 <= steps <= 1000:
        raise ValueError(f"steps must be an integer from 0 to 1000, got {steps!r}")
    if detail is None or detail == "":
        detail = default_detail(pipe, scale)
    try:
        detail = float(detail)
    except (TypeError, ValueError):
        raise ValueError(f"detail must be a number from 0 to 2, got {detail!r}") from None
    if not 0 <= detail <= 2:
        raise ValueError(f"detail must be a number from 0 to 2, got {detail!r}")
    if seed is None or seed == "":
        seed = 0
    if isinstance(seed, float) and seed.is_integer():
        seed = int(seed)
    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed <= SEED_MAX:
        raise ValueError(f"seed must be an integer from 0 to 2**64-1, got {seed!r}")
    return scale, steps, detail, seed


def _scale_choices(pipe: FlowUpPipeline) -> list[int]:
    factor = int(pipe.config.scale_factor)
    return [factor, factor * factor]


# --------------------------------------------------------------------------------------------
# the app


def require_gradio():
    """Import and return gradio; ``ImportError`` with a one-line message naming the ``demo`` extra
    (:data:`GRADIO_MISSING`) when it is absent or does not import."""
    import importlib.util

    if importlib.util.find_spec("gradio") is None:
        raise ImportError(GRADIO_MISSING)
    try:
        import gradio
    except ImportError as err:  # installed, but broken (a missing or mismatched dependency)
        reason = one_line(err)
        raise ImportError(f"gradio is installed but does not import ({reason}); {GRADIO_MISSING}") from None
    return gradio


def build_demo(pipe: FlowUpPipeline, out_dir: str | Path | None = None, title: str = TITLE) -> gr.Blocks:
    """The Gradio app around ``pipe``: upload, scale / steps / detail / seed, Upscale; a
    before/after slider (``gr.ImageSlider``; two images side by side on a Gradio without it),
    the timing and a PNG download. One upscale at a time (the pipeline is not shared between
    requests). Results are written under ``out_dir`` (default: a temporary folder removed at exit).
    The API endpoint is ``/upscale`` (``gradio_client``:
    ``client.predict(handle_file(path), 2, 1, 1.0, 0, 1.0, api_name="/upscale")``: image, scale,
    steps, detail, seed, denoise).
    """
    gr = require_gradio()

    if out_dir is None:
        out_dir = tempfile.mkdtemp(prefix="flowup-demo-")
        atexit.register(shutil.rmtree, out_dir, True)
    default_steps = int(pipe.config.default_num_inference_steps)
    has_slider = hasattr(gr, "ImageSlider")

    default_denoise = pipe.resolve_denoise(None)

    def run(image, scale, steps, detail, seed, denoise, progress=gr.Progress()):  # noqa: B008 - gradio's idiom
        if not image:
            raise gr.Error("Upload an image first.")

        def report(fraction: float) -> None:
            progress(fraction, desc="upscaling")

        try:
            result = upscale_image(pipe, image, scale=scale, steps=_as_int(steps), detail=detail, seed=_as_int(seed),
                                   out_dir=out_dir, progress=report, denoise=denoise)  # fmt: skip
        except ValueError as err:  # bad file or setting: one line in the app
            raise gr.Error(one_line(err)) from None
        compare = (result.before, result.image) if has_slider else [result.before, result.image]
        download = gr.DownloadButton(label=f"Download PNG ({result.path.name})", value=str(result.path),
                                     visible=True)  # fmt: skip
        return (*([compare] if has_slider else compare), result.summary(), download)

    with gr.Blocks(title=title, analytics_enabled=False) as demo:
        gr.Markdown(f"## {title}\n{INTRO}")
        with gr.Row():
            with gr.Column(scale=1):
                image = gr.Image(label="Input image", type="filepath", image_mode=None, format="png",
                                 sources=["upload", "clipboard"], height=320, elem_id="flowup-input")  # fmt: skip
                scale = gr.Radio(_scale_choices(pipe), value=_scale_choices(pipe)[0], label="Scale",
                                 elem_id="flowup-scale")  # fmt: skip
                steps = gr.Slider(0, max(20, default_steps), value=default_steps, step=1, label="Steps",
                                  info=f"ODE steps per x2 stage; 0 = no flow (model default: {default_steps})",
                                  elem_id="flowup-steps")  # fmt: skip
                detail = gr.Slider(0, 2, value=1.0, step=0.05, label="Detail",
                                   info="texture the flow adds: 0 = none, 1 = the model's output, 2 = more",
                                   elem_id="flowup-detail")  # fmt: skip
                denoise = gr.Slider(0, 1, value=default_denoise, step=0.05, label="Denoise",
                                    info="clean <-> faithful: 1 smooths the input's grain and JPEG artefacts away, "
                                    f"0 keeps everything it holds (model default: {default_denoise:g})",
                                    elem_id="flowup-denoise")  # fmt: skip
                seed = gr.Number(value=0, precision=0, minimum=0, label="Seed", info="same seed, same output",
                                 elem_id="flowup-seed")  # fmt: skip
                button = gr.Button("Upscale", variant="primary", elem_id="flowup-run")
            with gr.Column(scale=2):
                if has_slider:
                    outputs = [gr.ImageSlider(label="bicubic | flowup", type="pil", format="png", interactive=False,
                                              max_height=720, elem_id="flowup-compare")]  # fmt: skip
                else:  # an older Gradio: the two images side by side
                    with gr.Row():
                        outputs = [gr.Image(label="bicubic", type="pil", format="png", interactive=False),
                                   gr.Image(label="flowup", type="pil", format="png", interactive=False)]  # fmt: skip
                timing = gr.Markdown("", elem_id="flowup-timing")
                download = gr.DownloadButton("Download PNG", visible=False, elem_id="flowup-download")
        button.click(run, inputs=[image, scale, steps, detail, seed, denoise], outputs=[*outputs, timing, download],
                     api_name="upscale", concurrency_limit=1)  # fmt: skip
        # The slider follows the model's default detail for the chosen scale (x4: default_cascade_detail).
        scale.change(lambda chosen: default_detail(pipe, chosen), inputs=scale, outputs=detail, api_name=False)
    return demo


def default_detail(pipe: FlowUpPipeline, scale: int) -> float:
    """The pipeline's default ``detail`` at ``scale``: 1 for one x2 stage, the model's
    ``default_cascade_detail`` when the model runs twice."""
    return 1.0 if int(scale) == int(pipe.config.scale_factor) else float(pipe.config.get("default_cascade_detail", 1.0))


def _as_int(value):
    """Gradio numbers arrive as floats (``1.0``); keep ``None`` and non-integers for the checks."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def launch(demo: gr.Blocks, host: str = "127.0.0.1", port: int | None = None, block: bool = True, quiet: bool = False):
    """Start ``demo`` locally and offline: no share link, no server-side rendering (no Node
    server), no MCP server, no monitoring. ``port=None``: 7860, or the next free port. Returns
    Gradio's ``(app, local_url, share_url)``; with ``block=False`` the server runs in a thread
    (stop it with ``demo.close()``)."""
    return demo.launch(server_name=host, server_port=port, share=False, inbrowser=False, ssr_mode=False,
                       mcp_server=False, enable_monitoring=False, prevent_thread_lock=not block, quiet=quiet,
                       footer_links=["api", "settings"], show_error=True)  # fmt: skip
