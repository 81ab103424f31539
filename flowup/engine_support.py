"""What the CPU engines (ONNX Runtime, bfloat16 autocast) need from a pipeline's networks.

Both run float32 weights on the CPU and tile the codec around its image-wide layers, so both ask
the same three questions before they take over; each engine adds its own (an installed runtime,
a CPU instruction set).
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["cpu_float32_split_reason"]


def cpu_float32_split_reason(flow: nn.Module, codec: nn.Module, device: torch.device | str,
                             weights: str = "float32 weights only") -> str | None:  # fmt: skip
    """Why a CPU engine cannot run ``flow`` and ``codec`` on ``device`` (None: it can).

    ``weights`` words the dtype requirement in the message (e.g. "float32 weights under
    bfloat16 autocast")."""
    if torch.device(device).type != "cpu":
        return f"it runs on the CPU only, the pipeline is on {device}"
    dtypes = {p.dtype for m in (flow, codec) for p in m.parameters()}
    if dtypes != {torch.float32}:
        return f"it runs {weights}, the pipeline has {sorted(str(d) for d in dtypes)}"
    if codec.encoder_stages() is None or codec.decoder_stages() is None:
        return f"codec {type(codec).__name__} has no local / image-wide split"
    return None
