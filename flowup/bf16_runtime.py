"""PyTorch with oneDNN bfloat16 on the CPU: the fast path of CPUs with AMX tiles.

On a CPU with Intel AMX (Sapphire Rapids and later Xeons), oneDNN runs bfloat16 convolutions on
the tile units several times faster than float32: the codec and the flow in ``channels_last``
memory under ``torch.autocast("cpu", torch.bfloat16)`` upscale several times faster than PyTorch
float32 (``python -m eval bench``; figures in docs/speed.md). The output is not bit-equal to float32
but far closer to it than 8-bit output shows (``docs/scripts/runtime_psnr.py``). Without AMX,
bfloat16 runs slower than float32, so ``runtime="auto"`` picks this engine only where
:func:`cpu_has_amx` is true (elsewhere ONNX Runtime, float32).

The engine holds ``channels_last`` float32 copies of the networks (the pipeline's own modules
are left as they are) and gives float32, contiguous tensors back.
"""

from __future__ import annotations

import copy
from typing import Callable

import torch
from torch import nn

from flowup.codecs import CodecStages
from flowup.engine_support import cpu_float32_split_reason

__all__ = ["Bf16Engine", "bf16_codec_stages", "bf16_unavailable_reason", "cpu_has_amx"]


def cpu_has_amx() -> bool:
    """Whether this CPU has AMX tiles for bfloat16 (where this engine is the fastest)."""
    check = getattr(torch.cpu, "_is_amx_tile_supported", None)
    return bool(check and check() and torch.backends.mkldnn.is_available())


def _cpu_has_bf16() -> bool:
    check = getattr(torch.cpu, "_is_avx512_bf16_supported", None)
    return bool(check and check()) or cpu_has_amx()


def bf16_unavailable_reason(flow: nn.Module, codec: nn.Module, device: torch.device) -> str | None:
    """Why this engine cannot run these networks here (None: it can)."""
    reason = cpu_float32_split_reason(flow, codec, device, weights="float32 weights under bfloat16 autocast")
    if reason is None and (not torch.backends.mkldnn.is_available() or not _cpu_has_bf16()):
        reason = "this CPU or PyTorch build has no oneDNN bfloat16 (avx512_bf16 or AMX)"
    return reason


def _autocast(fn: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
    """``fn`` on channels_last inputs under bfloat16 autocast, float32 contiguous output."""

    def run(*tensors: torch.Tensor) -> torch.Tensor:
        inputs = [t.contiguous(memory_format=torch.channels_last) if t.dim() == 4 else t for t in tensors]
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            out = fn(*inputs)
        return out.float().contiguous()

    return run


def bf16_codec_stages(codec: nn.Module) -> tuple[CodecStages, CodecStages]:
    """The encoder and decoder stages of a ``channels_last`` copy of ``codec`` in bfloat16
    (float32 tensors in and out; for :func:`flowup.tiling.encode_tiled` / ``decode_tiled``)."""
    codec = copy.deepcopy(codec).eval().to(memory_format=torch.channels_last)
    enc, dec = codec.encoder_stages(), codec.decoder_stages()
    if enc is None or dec is None:
        raise ValueError(f"codec {type(codec).__name__} has no local / image-wide split")
    return (CodecStages(_autocast(enc.local), _autocast(enc.image_wide), enc.local_radius),
            CodecStages(_autocast(dec.local), _autocast(dec.image_wide), dec.local_radius))  # fmt: skip


class Bf16Engine:
    """``velocity(x_t, t, cond)`` and the codec stages (:class:`~flowup.codecs.CodecStages`) run
    in bfloat16 on the CPU. Tensors in and out are float32 CPU tensors, ``(N, C, h, w)``."""

    def __init__(self, flow: nn.Module, codec: nn.Module):
        self.flow = copy.deepcopy(flow).eval().to(memory_format=torch.channels_last)
        self.encoder_stages, self.decoder_stages = bf16_codec_stages(codec)
        self._velocity = _autocast(self.flow)

    def velocity(self, x_t: torch.Tensor, t: torch.Tensor | float, cond: torch.Tensor) -> torch.Tensor:
        """``(N, C, h, w)``, scalar or ``(N,)`` t, ``(N, C, h, w)`` -> velocity ``(N, C, h, w)``."""
        return self._velocity(x_t, torch.as_tensor(t, dtype=torch.float32), cond)
