"""ComfyUI entry point for flowup's nodes (FlowUp Loader, FlowUp Upscale); they live in :mod:`flowup.comfyui`.

Install: ``pip install`` flowup into ComfyUI's Python, then
``ln -s /path/to/flowup/comfyui ComfyUI/custom_nodes/comfyui-flowup`` (docs/comfyui.md).
"""

import sys

if __name__ == "flowup":  # older ComfyUI registers a node folder under its own name, hiding the flowup package
    raise ImportError("name the link to flowup's comfyui folder something other than 'flowup', e.g. "
                      "ComfyUI/custom_nodes/comfyui-flowup")  # fmt: skip

try:
    from flowup.comfyui import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS
except ImportError as err:  # flowup is not installed in the Python that runs ComfyUI
    raise ImportError(
        f"flowup's ComfyUI nodes need the flowup package in this Python: run `{sys.executable} -m pip install "
        f"/path/to/flowup` ({err})"
    ) from err

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
