"""The int8 runtime (:data:`flowup.runtimes.RUNTIMES`): the codec's convolutions in 8-bit integers under ONNX Runtime.

TAEF2's encode and decode are most of an x2 call on a CPU (``python -m eval bench``), and
under float32 ONNX Runtime they already run near the CPU's float32 peak. The remaining lever is
arithmetic: this module takes the float32 graphs of :mod:`flowup.onnx_runtime` and quantizes the two
local codec graphs (``encoder_local``, ``decoder_local``: every full- to /8-resolution convolution)
with ONNX Runtime's static quantizer. The velocity model and the image-wide GroupNorm blocks (at
latent resolution, a few percent of the work) stay float32.

Choices (figures in docs/speed.md):

- QDQ format, uint8 activations, per-channel int8 weights **in 7 bits** (``reduce_range``). On x86
  CPUs without VNNI, ONNX Runtime's U8S8 kernels add pairs of products in saturating 16-bit
  integers; full 8-bit weights lost far more PSNR-Y to that saturation than 7-bit ones.
  uint8 weights (U8U8) avoid it too, but gained far less speed there.
- MinMax activation ranges from a fixed calibration set that ships with flowup: the example photo
  ``flowup/assets/grace_hopper_256.jpg``, its mirror image and its half-size copy, through the same
  x2 source the pipeline encodes and the one-step latent it decodes, at the model's own noise
  level (:func:`calibration_feeds`).

It is opt-in (``auto`` never picks it): the output is not the float32 model's to float
rounding, a little lower PSNR-Y for more speed on CPUs without AMX (figures: docs/speed.md).
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

__all__ = ["CALIBRATION_VERSION", "QUANTIZED_GRAPHS", "calibration_feeds", "int8_unavailable_reason", "quantize_codec_graphs"]

CALIBRATION_VERSION = 2  # bump when the calibration set or the quantizer settings change
QUANTIZED_GRAPHS = ("encoder_local", "decoder_local")
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
def calibration_feeds(flow: nn.Module, codec: nn.Module, noise_alpha: float, factor: int = 2) -> dict[str, list[np.ndarray]]:
    """Inputs of the two quantized graphs, from the calibration images through the x2 stage
    (:class:`flowup.stage.X2Stage`, float32 torch modules on the CPU): the source images the
    encoder sees, and the decoder's image-wide features of both the source latent and the
    one-step latent (what a default call decodes). ``{graph name: [arrays]}``."""
    from flowup.runtimes import RUNTIMES
    from flowup.stage import StageSettings, X2Stage

    engine = RUNTIMES["torch"].build(flow, codec, noise_alpha, factor)
    stage = X2Stage(engine, codec, factor, noise_alpha, torch.device("cpu"))
    generator = torch.Generator().manual_seed(0)
    feeds: dict[str, list[np.ndarray]] = {name: [] for name in QUANTIZED_GRAPHS}
    for image in _calibration_images(max(1, codec.downscale * flow.size_multiple // factor)):
        x_up = stage.upsample(image)
        cond = stage.encode(x_up, codec_tile_size=0)
        one_step, _ = stage.integrate(cond, [generator], StageSettings(steps=1, tile_size=0))
        feeds["encoder_local"].append(x_up.numpy())
        feeds["decoder_local"] += [stage.engine.decoder.image_wide(z).numpy() for z in (cond, one_step)]
    return feeds


def quantize_codec_graphs(folder: str | Path, flow: nn.Module, codec: nn.Module, noise_alpha: float,
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
        def __init__(self, name: str, arrays: list[np.ndarray]):
            self._feeds = iter([{name: a} for a in arrays])

        def get_next(self) -> dict | None:
            return next(self._feeds, None)

    folder = Path(folder)
    feeds = calibration_feeds(flow, codec, noise_alpha, factor)
    for name in QUANTIZED_GRAPHS:
        source = folder / f"{name}.onnx"
        target = folder / f"{name}.int8.onnx"
        input_name = onnx.load(str(source), load_external_data=False).graph.input[0].name
        # The quantizer's advice ("consider pre-processing") goes to the root logger and its
        # calibration sessions log unused initializers: neither is news to a user, so both are muted.
        muted = logging.root.manager.disable
        logging.disable(logging.WARNING)
        onnxruntime.set_default_logger_severity(3)
        try:
            quantize_static(str(source), str(target), _Reader(input_name, feeds[name]), quant_format=QuantFormat.QDQ,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=True,
                            reduce_range=weight_bits == 7, calibrate_method=CalibrationMethod.MinMax)  # fmt: skip
        finally:
            logging.disable(muted)
            onnxruntime.set_default_logger_severity(2)  # ONNX Runtime's default (warnings)
        target.replace(source)
    for leftover in folder.glob("*-inferred.onnx"):  # the quantizer's shape-inference scratch files
        leftover.unlink()
    return {"graphs": list(QUANTIZED_GRAPHS), "format": "QDQ", "activations": "uint8", "weights": f"int8 per channel, {weight_bits}-bit range",
            "calibration": f"MinMax over {CALIBRATION_IMAGE.name} (3 variants)", "version": CALIBRATION_VERSION}  # fmt: skip
