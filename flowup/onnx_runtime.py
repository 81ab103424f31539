"""ONNX export of a pipeline's networks, and ONNX Runtime as their CPU engine (the fast path).

The velocity model and both directions of the codec, each split around its image-wide layers
(:class:`flowup.codecs.CodecStages`, so tiles stay exact), are exported with dynamic batch and
spatial sizes (float32, opset :data:`OPSET`):

====================================  =========================================================
``flow.onnx``                         ``x_t (N, C, h, w)``, ``t (N,)``, ``cond (N, C, h, w)`` -> ``v``
``encoder_local.onnx``                images ``(N, 3, H, W)`` in [0, 1] -> features ``(N, F, H/8, W/8)``
``encoder_image_wide.onnx``           features -> latents ``(N, C, H/8, W/8)``
``decoder_image_wide.onnx``           latents ``(N, C, h, w)`` -> features ``(N, F, h, w)``
``decoder_local.onnx``                features -> images ``(N, 3, 8h, 8w)`` in [0, 1]
``encoder.onnx`` / ``decoder.onnx``   the two halves joined (:func:`export_onnx` with ``joined``)
====================================  =========================================================

On a CPU, ONNX Runtime's blocked-layout convolutions run TAEF2 several times faster than PyTorch eager
at a megapixel (``python -m eval bench``), with outputs equal to float rounding. A pipeline uses
:class:`OnnxEngine` when its runtime is ``"onnx"``, or ``"auto"`` where :func:`onnx_unavailable_reason`
finds nothing against it (CPU, float32, a codec with stages, onnxruntime installed). Exports are
cached under ``$FLOWUP_CACHE/onnx/<fingerprint>``, the fingerprint hashing the weights, configs and
versions, so each model is exported once per machine (a few seconds) and loads from disk after.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from flowup.codecs import CodecStages
from flowup.engine_support import cpu_float32_split_reason
from flowup.model_folder import DEFAULT_NOISE_ALPHA
from flowup.weights import cache_dir

__all__ = ["OPSET", "GRAPHS", "OnnxEngine", "export_onnx", "fingerprint", "onnx_unavailable_reason", "load_engine"]

OPSET = 17
GRAPHS = ("flow", "encoder_local", "encoder_image_wide", "decoder_image_wide", "decoder_local")
_FORMAT_VERSION = 1  # bump when the exported graphs change meaning


def onnx_unavailable_reason(flow: nn.Module, codec: nn.Module, device: torch.device) -> str | None:
    """Why ONNX Runtime cannot run these networks here (None: it can)."""
    if importlib.util.find_spec("onnxruntime") is None or importlib.util.find_spec("onnx") is None:
        return "onnxruntime and onnx are not installed (pip install onnxruntime onnx)"
    return cpu_float32_split_reason(flow, codec, device)


def fingerprint(flow: nn.Module, codec: nn.Module) -> str:
    """Hex digest of the networks' weights, configs and the versions that shape the export."""
    digest = hashlib.sha256()
    import flowup

    header = [_FORMAT_VERSION, OPSET, flowup.__version__, torch.__version__]
    for module in (flow, codec):
        header.append(type(module).__name__)
        header.append(json.dumps(dict(getattr(module, "config", {})), sort_keys=True, default=str))
    digest.update(json.dumps(header).encode())
    for module in (flow, codec):
        for name, tensor in sorted(module.state_dict().items()):
            data = tensor.detach().to("cpu", torch.float32).contiguous()
            digest.update(f"{name}:{tuple(data.shape)}".encode())
            digest.update(data.numpy().tobytes())
    return digest.hexdigest()[:24]


# --------------------------------------------------------------------------------------------
# export


class _Velocity(nn.Module):
    """``flow(x_t, t, cond)`` with ``t`` of shape ``(N,)``, for tracing."""

    def __init__(self, flow: nn.Module):
        super().__init__()
        self.flow = flow

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        return self.flow(x_t, t, cond)


class _Call(nn.Module):
    """A plain callable of CodecStages as a module, for tracing."""

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor]):
        super().__init__()
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x)


def _export_one(module: nn.Module, args: tuple, names: list[str], path: Path, axes: dict) -> None:
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # TracerWarnings and the TorchScript exporter's deprecation note
        torch.onnx.export(module, args, str(path), input_names=names[:-1], output_names=names[-1:],
                          dynamic_axes=axes, opset_version=OPSET, dynamo=False)  # fmt: skip


def export_onnx(flow: nn.Module, codec: nn.Module, out_dir: str | Path, joined: bool = False,
                int8: bool = False, noise_alpha: float = DEFAULT_NOISE_ALPHA, factor: int = 2,
                extra_flows: dict[str, nn.Module] | None = None) -> dict[str, Path]:  # fmt: skip
    """Write the :data:`GRAPHS` (and with ``joined`` also ``encoder.onnx`` / ``decoder.onnx``) and
    ``onnx_manifest.json`` to ``out_dir``; returns ``{graph name: path}``. Exports float32 copies on
    the CPU; the given modules are not changed. ``int8``: the graphs of
    :data:`flowup.onnx_int8.QUANTIZED_GRAPHS` quantized (:mod:`flowup.onnx_int8`, calibrated on the
    model's stage of ``factor`` at its ``noise_alpha``; the joined graphs are built from the
    quantized halves). ``extra_flows``: more velocity networks of the model (e.g.
    ``{"cascade_flow": ...}``), each written as ``<name>.onnx`` beside ``flow.onnx``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    flow32 = _Velocity(_cpu_float32(flow)).eval()
    codec32 = _cpu_float32(codec).eval()
    enc, dec = codec32.encoder_stages(), codec32.decoder_stages()
    if enc is None or dec is None:
        raise ValueError(f"codec {type(codec).__name__} has no local / image-wide split to export")
    channels, down = codec32.latent_channels, codec32.downscale
    multiple = down * flow.size_multiple
    side = 2 * multiple  # a small trace size; every spatial axis is dynamic
    image = torch.rand(1, 3, side, side)
    with torch.no_grad():
        features_in = enc.local(image)
        latent = enc.image_wide(features_in)
        features_out = dec.image_wide(latent)
    nchw = {0: "batch", 2: "height", 3: "width"}
    paths = {name: out / f"{name}.onnx" for name in GRAPHS}
    x_t = torch.randn_like(latent)
    velocity_axes = {"x_t": nchw, "cond": nchw, "t": {0: "batch"}, "velocity": nchw}
    _export_one(flow32, (x_t, torch.full((1,), 0.5), latent), ["x_t", "t", "cond", "velocity"], paths["flow"],
                velocity_axes)  # fmt: skip
    for name, extra in (extra_flows or {}).items():
        paths[name] = out / f"{name}.onnx"
        _export_one(_Velocity(_cpu_float32(extra)).eval(), (x_t, torch.full((1,), 0.5), latent),
                    ["x_t", "t", "cond", "velocity"], paths[name], velocity_axes)  # fmt: skip
    for name, fn, example, names in (
        ("encoder_local", enc.local, image, ["images", "features"]),
        ("encoder_image_wide", enc.image_wide, features_in, ["features", "latents"]),
        ("decoder_image_wide", dec.image_wide, latent, ["latents", "features"]),
        ("decoder_local", dec.local, features_out, ["features", "images"]),
    ):
        _export_one(_Call(fn), (example,), names, paths[name], {names[0]: nchw, names[1]: nchw})
    quantization = None
    if int8:
        from flowup.onnx_int8 import quantize_graphs

        with torch.no_grad():
            quantization = quantize_graphs(out, flow32.flow, codec32, noise_alpha, factor)
    if joined:
        paths["encoder"] = _join(paths["encoder_local"], paths["encoder_image_wide"], out / "encoder.onnx")
        paths["decoder"] = _join(paths["decoder_image_wide"], paths["decoder_local"], out / "decoder.onnx")
    manifest = {
        "format": _FORMAT_VERSION,
        "opset": OPSET,
        "fingerprint": fingerprint(flow, codec),
        "latent_channels": channels,
        "downscale": down,
        "size_multiple": multiple,
        "encoder_local_radius": enc.local_radius,
        "decoder_local_radius": dec.local_radius,
        "graphs": {name: path.name for name, path in paths.items()},
        "composition": {"encode": "encoder_image_wide(encoder_local(images))",
                        "decode": "decoder_local(decoder_image_wide(latents))"},
    }  # fmt: skip
    if quantization is not None:
        manifest["quantization"] = quantization
    (out / "onnx_manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return paths


def _join(first: Path, second: Path, target: Path) -> Path:
    """One graph computing ``second(first(x))`` (``onnx.compose``)."""
    import onnx
    from onnx import compose

    a, b = onnx.load(str(first)), onnx.load(str(second))
    link = [(a.graph.output[0].name, b.graph.input[0].name)]
    joined = compose.merge_models(a, b, io_map=link, prefix1="first_", prefix2="second_")
    onnx.save(joined, str(target))
    return target


def _cpu_float32(module: nn.Module) -> nn.Module:
    import copy

    return nn.Module.to(copy.deepcopy(module), device="cpu", dtype=torch.float32)


# --------------------------------------------------------------------------------------------
# the engine


@dataclass
class OnnxEngine:
    """ONNX Runtime sessions of one exported pipeline: ``velocity(x_t, t, cond)`` and the codec
    stages (:class:`~flowup.codecs.CodecStages`) that :func:`flowup.tiling.encode_tiled` /
    :func:`~flowup.tiling.decode_tiled` take. Tensors in and out are float32 CPU tensors."""

    folder: Path
    threads: int
    encoder_stages: CodecStages
    decoder_stages: CodecStages
    _flow: Callable

    def velocity(self, x_t: torch.Tensor, t: torch.Tensor | float, cond: torch.Tensor) -> torch.Tensor:
        """``(N, C, h, w)``, scalar or ``(N,)`` t, ``(N, C, h, w)`` -> velocity ``(N, C, h, w)``."""
        t = torch.as_tensor(t, dtype=torch.float32).reshape(-1).expand(x_t.shape[0])
        return self._flow(x_t, t.contiguous(), cond)

    @classmethod
    def load(cls, folder: str | Path, threads: int | None = None) -> "OnnxEngine":
        """Open the graphs written by :func:`export_onnx` (``threads``: default torch's count)."""
        import onnxruntime as ort

        folder = Path(folder)
        manifest = json.loads((folder / "onnx_manifest.json").read_text())
        threads = threads or torch.get_num_threads()
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3  # errors only
        # No spin-waiting after a run: torch's resampling, noise and back-projection run between the
        # graphs on the same cores, and spinning ORT threads slowed them several times over (an x2
        # call of a 512² image 12-16 % slower in all; docs/speed.md).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        # Tiles and images change size from call to call: ORT's memory patterns are planned per
        # shape and only add peak memory (about 5 GB instead of 3 at 1 MP out, first call no faster).
        options.enable_mem_pattern = False
        runs = {}
        for name in GRAPHS:
            session = ort.InferenceSession(str(folder / manifest["graphs"][name]), options,
                                           providers=["CPUExecutionProvider"])  # fmt: skip
            runs[name] = _session_call(session)
        encoder = CodecStages(runs["encoder_local"], runs["encoder_image_wide"], manifest["encoder_local_radius"])
        decoder = CodecStages(runs["decoder_local"], runs["decoder_image_wide"], manifest["decoder_local_radius"])
        return cls(folder=folder, threads=threads, encoder_stages=encoder, decoder_stages=decoder, _flow=runs["flow"])


def _session_call(session) -> Callable[..., torch.Tensor]:
    names = [i.name for i in session.get_inputs()]

    def run(*tensors: torch.Tensor) -> torch.Tensor:
        feeds = {n: np.ascontiguousarray(t.detach().to("cpu", torch.float32).numpy()) for n, t in zip(names, tensors)}
        return torch.from_numpy(session.run(None, feeds)[0])

    return run


def load_engine(flow: nn.Module, codec: nn.Module, threads: int | None = None, int8: bool = False,
                noise_alpha: float = DEFAULT_NOISE_ALPHA, factor: int = 2) -> OnnxEngine:  # fmt: skip
    """The engine for these networks: exported once into the cache, then loaded from there.
    ``int8``: quantized as :func:`export_onnx` does (calibrated on a stage of ``factor`` at
    ``noise_alpha``), cached apart."""
    key = fingerprint(flow, codec)
    if int8:
        import onnxruntime

        from flowup.onnx_int8 import CALIBRATION_VERSION

        tag = f"{key}-int8-{CALIBRATION_VERSION}-{noise_alpha}-{factor}-{onnxruntime.__version__}"
        key = hashlib.sha256(tag.encode()).hexdigest()[:24]
    folder = cache_dir() / "onnx" / key
    if not (folder / "onnx_manifest.json").is_file():
        folder.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=folder.parent))
        try:
            export_onnx(flow, codec, staging, int8=int8, noise_alpha=noise_alpha, factor=factor)
            try:
                os.replace(staging, folder)  # atomic; another process may have won the race
            except OSError:
                if not (folder / "onnx_manifest.json").is_file():
                    raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return OnnxEngine.load(folder, threads)
