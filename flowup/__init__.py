"""flowup: a flow-matching latent upscaler (Coupling Flow Matching, arXiv 2312.07360).

A frozen base model (or any image) gives a low-res image; flowup upsamples it in pixels, encodes
it with a pretrained codec, transports that latent along a straight flow-matching path to the
latent of the high-res image, and decodes it. Public names are re-exported here, imported on first
use (so that ``flowup --help`` does not load torch and diffusers): diffusers saves the module path
of custom pipeline components as ``flowup``, so keep these names stable.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__all__ = ["Codec", "DiffusersVAECodec", "TAEF2Codec", "load_codec", "FlowUNet", "FlowUpPipeline", "FlowUpPipelineOutput",
           "BoostedTextToImage"]  # fmt: skip
__version__ = "0.1.0"

_HOMES = {
    "Codec": "flowup.codecs",
    "DiffusersVAECodec": "flowup.codecs",
    "TAEF2Codec": "flowup.codecs",
    "load_codec": "flowup.codecs",
    "FlowUNet": "flowup.models",
    "FlowUpPipeline": "flowup.pipeline",
    "FlowUpPipelineOutput": "flowup.pipeline",
    "BoostedTextToImage": "flowup.text_to_image",
}

if TYPE_CHECKING:
    from flowup.codecs import Codec, DiffusersVAECodec, TAEF2Codec, load_codec
    from flowup.models import FlowUNet
    from flowup.pipeline import FlowUpPipeline, FlowUpPipelineOutput
    from flowup.text_to_image import BoostedTextToImage


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        value = getattr(importlib.import_module(_HOMES[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'flowup' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
