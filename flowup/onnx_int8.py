"""The int8 runtime (:data:`flowup.runtimes.RUNTIMES`): the codec's and the flow's convolutions in 8-bit integers under ONNX Runtime.

TAEF2's encode and decode are most of an x2 call on a CPU (``python -m eval bench``), and
under float32 ONNX Runtime they already run near the CPU's float32 peak. The remaining lever is
arithmetic: this module takes the float32 graphs of :mod:`flowup.onnx_runtime` and quantizes,
with ONNX Runtime's static quantizer, the two local codec graphs (``encoder_local``,
``decoder_local``: every full- to /8-resolution convolution) and the velocity network's
convolutions (``flow``: its per-pixel norms, activations and time embedding stay float32). The
image-wide GroupNorm blocks of the codec (at latent resolution, a few percent of the work) stay
float32, as do a cascade's extra velocity networks.

Choices (figures in docs/speed.md):

- QDQ format, uint8 activations, per-channel int8 weights **in 7 bits** (``reduce_range``). On x86
  CPUs without VNNI, ONNX Runtime's U8S8 kernels add pairs of products in saturating 16-bit
  integers; full 8-bit weights lost far more PSNR-Y to that saturation than 7-bit ones.
  uint8 weights (U8U8) avoid it too, but gained far less speed there.
- MinMax activation ranges from a fixed calibration set that ships with flowup: the example photo
  ``flowup/assets/grace_hopper_256.jpg``, its mirror image and its half-size copy, through the same
  x2 source the pipeline encodes, the velocity's inputs at t = 0 and t = 0.5 of the path, and the
  one-step latent it decodes, at the model's own noise level (:func:`calibration_feeds`).

``auto`` picks it on CPUs without AMX (:data:`flowup.runtimes.AUTO_CPU_PREFERENCE`): the output
is not the float32 model's to float rounding but measures the same, at 1.7-2x the speed of float32
ONNX Runtime there (figures: docs/speed.md).
Quantized graphs are cached beside the float32 ones (:func:`flowup.onnx_runtime.load_engine`).
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

import numpy as np
import PIL.Image
import torch
from torch import nn

__all__ = ["CALIBRATION_VERSION", "QUANTIZED_GRAPHS", "calibration_feeds", "int8_unavailable_reason", "quantize_graphs"]

CALIBRATION_VERSION = 3  # bump when the calibration set or the quantizer settings change
#: The graphs quantized, and the operators quantized in each (None: every operator the quantizer can).
QUANTIZED_GRAPHS: dict[str, list[str] | None] = {"flow": ["Conv"], "encoder_local": None, "decoder_local": None}
CALIBRATION_IMAGE = Path(__file__).parent / "assets" / "grace_hopper_256.jpg"


def int8_unavailable_reason() -> str | None:
    """Why the quantizer cannot run here (None: it can)."""
    if importlib.util.find_spec("onnxruntime") is None:
        return "onnxruntime is not installed (pip install onnxruntime onnx)"
    if importlib.util.find_spec("onnxruntime.quantization") is None:
        return "this onnxruntime has no quantization tools (onnxruntime.quantization)"
    return None


def _calibration_images(multiple: int) -> list[torch.Tensor]:
    """The example photo, mirrored, and at half size: ``(1, 3, h, w)`` in [0, 1], sides cropped
    to a multiple of ``multiple``."""
    photo = PIL.Image.open(CALIBRATION_IMAGE).convert("RGB")
    variants = [photo, photo.transpose(PIL.Image.Transpose.FLIP_LEFT_RIGHT),
                photo.resize((photo.width // 2, photo.height // 2), PIL.Image.Resampling.BICUBIC)]  # fmt: skip
    images = []
    for variant in variants:
        x = torch.from_numpy(np.asarray(variant, dtype=np.float32) / 255.0).permute(2, 0, 1)[None]
        h, w = x.shape[-2] // multiple * multiple, x.shape[-1] // multiple * multiple
        images.append(x[..., :h, :w].contiguous())
    return images


@torch.no_grad()
def calibration_feeds(flow: nn.Module, codec: nn.Module, noise_alpha: float, factor: int = 2) -> dict[str, list[dict[str, np.ndarray]]]:
    """Inputs of the quantized graphs, from the calibration images through the x2 stage
    (:class:`flowup.stage.X2Stage`, float32 torch modules on the CPU): the source images the
    encoder sees; the velocity's inputs at t = 0 (the noised source) and t = 0.5 (half an Euler
    step along); the decoder's image-wide features of both the source latent and the one-step
    latent (what a default call decodes). ``{graph name: [{input name: array}]}``."""
    from flowup.flow import noise_source
    from flowup.runtimes import RUNTIMES
    from flowup.stage import X2Stage

    engine = RUNTIMES["torch"].build(flow, codec, noise_alpha, factor)
    stage = X2Stage(engine, codec, factor, noise_alpha, torch.device("cpu"))
    generator = torch.Generator().manual_seed(0)
    feeds: dict[str, list[dict[str, np.ndarray]]] = {name: [] for name in QUANTIZED_GRAPHS}
    for image in _calibration_images(max(1, codec.downscale * flow.size_multiple // factor)):
        x_up = stage.upsample(image)
        cond = stage.encode(x_up, codec_tile_size=0).float()
        x0 = noise_source(cond, noise_alpha, noise=torch.randn(cond.shape, generator=generator))
        v0 = engine.velocity(x0, torch.zeros(1), cond).float()
        x_half = x0 + 0.5 * v0
        one_step = x0 + v0  # what a default (one Euler step) call decodes
        feeds["encoder_local"].append({"images": x_up.numpy()})
        feeds["flow"] += [{"x_t": x.numpy(), "t": np.full(1, t, np.float32), "cond": cond.numpy()} for x, t in ((x0, 0.0), (x_half, 0.5))]
        feeds["decoder_local"] += [{"features": stage.engine.decoder.image_wide(z).numpy()} for z in (cond, one_step)]
    return feeds


def quantize_graphs(folder: str | Path, flow: nn.Module, codec: nn.Module, noise_alpha: float,
                    factor: int = 2, weight_bits: int = 7) -> dict:  # fmt: skip
    """Replace :data:`QUANTIZED_GRAPHS` in ``folder`` (written by :func:`flowup.onnx_runtime.export_onnx`
    from these float32 CPU modules) by their int8 versions; returns the settings for the manifest.
    ``weight_bits``: 7 (the runtime's) or 8 (full range: saturates on AVX2, for comparison)."""
    if weight_bits not in (7, 8):
        raise ValueError(f"weight_bits must be 7 or 8, got {weight_bits}")
    import onnx
    import onnxruntime
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class _Reader(CalibrationDataReader):
        def __init__(self, feeds: list[dict[str, np.ndarray]]):
            self._feeds = iter(feeds)

        def get_next(self) -> dict | None:
            return next(self._feeds, None)

    folder = Path(folder)
    feeds = calibration_feeds(flow, codec, noise_alpha, factor)
    for name, op_types in QUANTIZED_GRAPHS.items():
        source = folder / f"{name}.onnx"
        target = folder / f"{name}.int8.onnx"
        inputs = {i.name for i in onnx.load(str(source), load_external_data=False).graph.input}
        if inputs != set(feeds[name][0]):
            raise ValueError(f"{source.name} takes {sorted(inputs)}, the calibration feeds {sorted(feeds[name][0])}")
        # The quantizer's advice ("consider pre-processing") goes to the root logger and its
        # calibration sessions log unused initializers: neither is news to a user, so both are muted.
        muted = logging.root.manager.disable
        logging.disable(logging.WARNING)
        onnxruntime.set_default_logger_severity(3)
        try:
            quantize_static(str(source), str(target), _Reader(feeds[name]), quant_format=QuantFormat.QDQ,
                            op_types_to_quantize=op_types, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            per_channel=True, reduce_range=weight_bits == 7, calibrate_method=CalibrationMethod.MinMax)  # fmt: skip
        finally:
            logging.disable(muted)
            onnxruntime.set_default_logger_severity(2)  # ONNX Runtime's default (warnings)
        target.replace(source)
    for leftover in folder.glob("*-inferred.onnx"):  # the quantizer's shape-inference scratch files
        leftover.unlink()
    return {"graphs": {name: op_types or "all" for name, op_types in QUANTIZED_GRAPHS.items()}, "format": "QDQ", "activations": "uint8", "weights": f"int8 per channel, {weight_bits}-bit range",
            "calibration": f"MinMax over {CALIBRATION_IMAGE.name} (3 variants)", "version": CALIBRATION_VERSION}  # fmt: skip
