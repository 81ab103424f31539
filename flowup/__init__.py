"""flowup: a flow-matching latent upscaler (Coupling Flow Matching, arXiv 2312.07360).

A frozen base model (or any image) gives a low-res image; flowup upsamples it in pixels, encodes
it with a pretrained codec, transports that latent along a straight flow-matching path to the
latent of the high-res image, and decodes it. Public names are re-exported here: diffusers saves
the module path of custom pipeline components as ``flowup``, so keep these names stable.
"""

from flowup.codecs import Codec, DiffusersVAECodec, TAEF2Codec, load_codec
from flowup.models import FlowUNet
from flowup.pipeline import FlowUpPipeline, FlowUpPipelineOutput

__all__ = ["Codec", "DiffusersVAECodec", "TAEF2Codec", "load_codec", "FlowUNet", "FlowUpPipeline", "FlowUpPipelineOutput"]
__version__ = "0.1.0"
