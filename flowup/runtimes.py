"""The runtimes: what runs a pipeline's networks, in one list.

Each :class:`Runtime` says what it is, why it cannot run a pair of networks here (None: it can),
and how it builds an :class:`Engine`, the velocity and codec stages one x2 stage calls, with the
geometry of the network behind them. The pipeline, the CLI, the ComfyUI node, the demo and the
bench all read :data:`RUNTIME_NAMES`; importing this module imports no torch (the CLI starts
without it), the runtimes' own modules load when an engine is asked for.

``"auto"`` picks, on a CPU with float32 weights, the first of :data:`AUTO_CPU_PREFERENCE` that can
run the networks there, else ``torch``; ``torch`` elsewhere (GPU, half precision). Where the CPU
has AMX tiles that is ``torch-bf16``; elsewhere ``onnx-int8``, the fastest there, whose output is
not float32's to rounding but measures the same (0.02-0.07 dB PSNR-Y under float32, patch-FID
within 3 %, on clean, degraded and native generated inputs), then ``onnx``. ``"auto-exact"``
picks the same way among the runtimes whose output equals float32's to rounding (``exact``): what
evaluation tables use by default, so that they measure the model, not a runtime. Speeds and
quality: docs/speed.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    import torch
    from torch import nn

    from flowup.codecs import Codec, CodecStages

__all__ = ["AUTO", "AUTO_CPU_PREFERENCE", "AUTO_EXACT", "RUNTIME_NAMES", "RUNTIMES", "Engine", "EngineCache", "Runtime", "RuntimeUnavailableError",
           "check_runtime_name", "choose_runtime", "unavailable_reason"]  # fmt: skip

AUTO = "auto"
AUTO_EXACT = "auto-exact"
#: What ``"auto"`` tries on a CPU with float32 weights, fastest first (docs/speed.md): with AMX
#: tiles (``"amx"``) and without (``"other"``).
AUTO_CPU_PREFERENCE: dict[str, tuple[str, ...]] = {"amx": ("torch-bf16", "onnx-int8", "onnx"), "other": ("onnx-int8", "onnx")}


class RuntimeUnavailableError(RuntimeError):
    """A runtime was asked for that cannot run these networks here (its message says why)."""


@dataclass
class Engine:
    """What one x2 stage runs: ``velocity(x_t, t, cond) -> v`` on latents ``(N, C, h, w)``, the
    codec's stages (:class:`~flowup.codecs.CodecStages`; None: tile the whole codec), and
    ``flow``, the torch velocity network behind them, whose geometry the stage pads, tiles and
    casts by. ``backend``: the runtime's own engine object (an ONNX Runtime engine knows its
    folder), for tools and tests."""

    velocity: Callable[..., torch.Tensor]
    encoder: CodecStages | None
    decoder: CodecStages | None
    flow: nn.Module
    backend: Any = None

    @property
    def size_multiple(self) -> int:
        """Latent sides must be multiples of this."""
        return self.flow.size_multiple

    @property
    def receptive_radius(self) -> int:
        """Latent pixels of context each side one velocity pixel depends on."""
        return self.flow.receptive_radius

    @property
    def dtype(self) -> torch.dtype:
        """The dtype latents are cast to before the velocity."""
        return self.flow.dtype


@dataclass(frozen=True)
class Runtime:
    """One way to run the networks. ``exact``: its output equals float32's to rounding (else: close
    to it, measured in docs/speed.md). ``reason(flow, codec, device)``: why it cannot run here, or None.
    ``build(flow, codec, noise_alpha, factor)``: the :class:`Engine` of a stage of ``factor`` whose
    source is noised to ``noise_alpha`` (what the int8 calibration reproduces)."""

    name: str
    description: str
    exact: bool
    reason: Callable[[Any, Any, Any], str | None]
    build: Callable[[Any, Any, float, int], Engine]


def _wrapped(backend: Any, flow: nn.Module) -> Engine:
    """A CPU engine (bfloat16 or ONNX Runtime: ``velocity``, ``encoder_stages``, ``decoder_stages``) as an :class:`Engine`."""
    return Engine(backend.velocity, backend.encoder_stages, backend.decoder_stages, flow, backend)


def _torch_reason(flow: nn.Module, codec: Codec, device: torch.device) -> str | None:
    return None


def _torch_build(flow: nn.Module, codec: Codec, noise_alpha: float, factor: int) -> Engine:
    return Engine(flow, codec.encoder_stages(), codec.decoder_stages(), flow)


def _bf16_reason(flow: nn.Module, codec: Codec, device: torch.device) -> str | None:
    from flowup.bf16_runtime import bf16_unavailable_reason

    return bf16_unavailable_reason(flow, codec, device)


def _bf16_build(flow: nn.Module, codec: Codec, noise_alpha: float, factor: int) -> Engine:
    from flowup.bf16_runtime import Bf16Engine

    return _wrapped(Bf16Engine(flow, codec), flow)


def _onnx_reason(flow: nn.Module, codec: Codec, device: torch.device) -> str | None:
    from flowup.onnx_runtime import onnx_unavailable_reason

    return onnx_unavailable_reason(flow, codec, device)


def _onnx_build(flow: nn.Module, codec: Codec, noise_alpha: float, factor: int) -> Engine:
    from flowup.onnx_runtime import load_engine

    return _wrapped(load_engine(flow, codec), flow)


def _int8_reason(flow: nn.Module, codec: Codec, device: torch.device) -> str | None:
    from flowup.onnx_int8 import int8_unavailable_reason

    return _onnx_reason(flow, codec, device) or int8_unavailable_reason()


def _int8_build(flow: nn.Module, codec: Codec, noise_alpha: float, factor: int) -> Engine:
    from flowup.onnx_runtime import load_engine

    return _wrapped(load_engine(flow, codec, int8=True, noise_alpha=noise_alpha, factor=factor), flow)


RUNTIMES: dict[str, Runtime] = {
    runtime.name: runtime
    for runtime in (
        Runtime("torch", "PyTorch, the weights' own dtype and device", True, _torch_reason, _torch_build),
        Runtime("torch-bf16", "oneDNN bfloat16 on a CPU (fastest where it has AMX)", True, _bf16_reason, _bf16_build),
        Runtime("onnx", "ONNX Runtime, CPU, float32", True, _onnx_reason, _onnx_build),
        Runtime("onnx-int8", "ONNX Runtime, the codec and the flow's convolutions in 8-bit integers (fastest without AMX)", False,
                _int8_reason, _int8_build),
    )
}  # fmt: skip
RUNTIME_NAMES: tuple[str, ...] = (AUTO, AUTO_EXACT, *RUNTIMES)


def check_runtime_name(name: str) -> str:
    """``name`` if it is one of :data:`RUNTIME_NAMES`, else ``ValueError``."""
    if name not in RUNTIME_NAMES:
        raise ValueError(f"runtime must be one of {RUNTIME_NAMES}, got {name!r}")
    return name


def unavailable_reason(name: str, flow: nn.Module, codec: Codec, device: torch.device) -> str | None:
    """Why runtime ``name`` cannot run ``flow`` and ``codec`` on ``device`` (None: it can)."""
    return RUNTIMES[check_runtime_name(name)].reason(flow, codec, device) if name not in (AUTO, AUTO_EXACT) else None


def choose_runtime(requested: str, flow: nn.Module, codec: Codec, device: torch.device) -> str:
    """The runtime a call runs: ``requested`` itself (``RuntimeUnavailableError`` where it cannot
    run here) or, for ``"auto"``, the first of :data:`AUTO_CPU_PREFERENCE` that can (module docstring);
    for ``"auto-exact"`` the first of those that is exact."""
    if requested not in (AUTO, AUTO_EXACT):
        reason = unavailable_reason(requested, flow, codec, device)
        if reason is not None:
            raise RuntimeUnavailableError(f"runtime {requested!r} cannot run this pipeline: {reason}")
        return requested
    from flowup.bf16_runtime import cpu_has_amx

    preferred = AUTO_CPU_PREFERENCE["amx" if cpu_has_amx() else "other"]
    if requested == AUTO_EXACT:
        preferred = tuple(name for name in preferred if RUNTIMES[name].exact)
    return next((name for name in preferred if unavailable_reason(name, flow, codec, device) is None), "torch")


class EngineCache:
    """Built engines, one per slot (a runtime, a network's name, a setting), rebuilt when the
    weights change in place (training), move, or torch's thread count changes."""

    def __init__(self) -> None:
        self._slots: dict[tuple, tuple[tuple, Engine]] = {}

    def get(self, runtime: str, slot: tuple, flow: nn.Module, codec: Codec, noise_alpha: float, factor: int) -> Engine:
        """The engine of ``runtime`` for ``flow`` and ``codec`` in ``slot``, built when missing or stale."""
        import torch

        if runtime == "torch":  # nothing to build: the modules themselves
            return RUNTIMES["torch"].build(flow, codec, noise_alpha, factor)
        # Inference tensors (weights loaded under torch.inference_mode) carry no version counter.
        key = (torch.get_num_threads(), noise_alpha, factor) + tuple(
            (p.data_ptr(), 0 if p.is_inference() else p._version) for m in (flow, codec) for p in m.parameters()
        )
        slot = (runtime, *slot)
        if slot not in self._slots or self._slots[slot][0] != key:
            self._slots[slot] = (key, RUNTIMES[runtime].build(flow, codec, noise_alpha, factor))
        return self._slots[slot][1]

    def built(self, runtime: str, *slot: Any) -> Engine | None:
        """The engine built for ``(runtime, *slot)``, or None (for tests and tools)."""
        entry = self._slots.get((runtime, *slot))
        return entry[1] if entry else None
